//! Generates Rust code for the etcd v3 client API and the konsen peer protocol.
//!
//! protoc comes from `protoc-bin-vendored` and is handed to prost-build through
//! `Config::protoc_executable`, so no host protoc and no `PROTOC` env mutation
//! are needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let etcd_root = proto_root.join("etcd");
    let konsen_root = proto_root.join("konsen");

    // Cargo scans a directory given here recursively.
    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed=build.rs");

    let protos = [
        etcd_root.join("mvccpb/kv.proto"),
        etcd_root.join("authpb/auth.proto"),
        etcd_root.join("etcdserverpb/rpc.proto"),
        konsen_root.join("raft.proto"),
    ];
    let includes = [etcd_root, konsen_root];

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Values are handed around (raft log, storage) without copying.
        .bytes(".etcdserverpb.PutRequest.value")
        .bytes(".mvccpb.KeyValue.value")
        .bytes(".konsen.raft")
        .compile_with_config(config, &protos, &includes)?;

    Ok(())
}
