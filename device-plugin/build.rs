//! Compiles proto/deviceplugin.proto (kubelet v1beta1) and proto/podresources.proto (the
//! kubelet's PodResources v1, the part kaas reads) with protox: servers and clients, the
//! servers for the tests' stand-ins.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["../proto/deviceplugin.proto", "../proto/podresources.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["../proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
