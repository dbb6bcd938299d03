//! Compiles proto/executor.proto with protox (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/executor.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../proto"])?;
    // Payloads decode as slices of the received buffer (no copy) and clone by reference;
    // messages encode into a buffer sized for all of them (see the codec's docs).
    tonic_prost_build::configure()
        .codec_path("crate::codec::SizedCodec")
        .bytes(".kaas.executor.v1.ExecuteRequest")
        .bytes(".kaas.executor.v1.ExecuteResponse")
        .compile_fds(fds)?;
    Ok(())
}
