//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates prost messages and
//! tonic stubs, plus the encoded descriptor set that `tonic-reflection` serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        root.join("raft/v1/raft.proto"),
        root.join("switchboard/v1/model.proto"),
        root.join("switchboard/v1/events.proto"),
        root.join("switchboard/v1/presence.proto"),
        root.join("switchboard/v1/assignments.proto"),
        root.join("switchboard/v1/admin.proto"),
        root.join("switchboard/v1/cluster.proto"),
        root.join("switchboard/v1/nats.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().btree_map(".").build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
