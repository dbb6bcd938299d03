//! Compiles proto/gateway.proto with protox (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/gateway.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
