//! Compiles Bida's gRPC interface (`proto/bida/v1`) without `protoc`: protox
//! parses the files into a descriptor set, which tonic-prost-build turns into
//! the message types, the server traits and the clients, and which is kept
//! whole for the reflection service and the JSON mapping.

use std::path::PathBuf;

const FILES: [&str; 3] = ["bida/v1/tasks.proto", "bida/v1/messages.proto", "bida/v1/pull.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let set = protox::compile(FILES, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("bida_descriptor.bin"), prost::Message::encode_to_vec(&set))?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(set)?;
    Ok(())
}
