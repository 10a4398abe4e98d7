//! Generates the Rust types and tonic stubs from `proto/`, using the protoc binary that
//! ships inside the `protoc-bin-vendored` crate so that no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.bytes(["."]);
    let protos = [
        "strait/v1/strait.proto",
        "strait/internal/v1/internal.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .codec_path("crate::codec::PresizedCodec")
        .compile_with_config(config, &protos, &["."])?;
    Ok(())
}
