//! Compiles the .proto files with protox (pure Rust, no protoc binary needed).
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["keyward/v1/keyward.proto", "keyward/plugin/v1/plugin.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("keyward_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // The client API alone: what the agent socket serves and describes through reflection.
    let client_api = protox::compile(["keyward/v1/keyward.proto"], ["."])?;
    std::fs::write(
        out_dir.join("keyward_v1_descriptor.bin"),
        client_api.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
