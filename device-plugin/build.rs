//! Compiles proto/deviceplugin.proto (kubelet v1beta1) with protox: server and client, the
//! client for the registration call and for tests.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/deviceplugin.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
