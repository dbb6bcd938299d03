//! Compiles proto/gateway.proto with protox (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/gateway.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../proto"])?;
    // Payloads decode as slices of the received buffer (no copy) and clone by reference;
    // messages encode into a buffer sized for all of them (see the codec's docs).
    tonic_prost_build::configure()
        .codec_path("kaas_executor::codec::SizedCodec")
        .bytes(".kaas.gateway.v1.InvokeRequest")
        .bytes(".kaas.gateway.v1.InvokeResponse")
        .compile_fds(fds)?;
    Ok(())
}
