//! Generates the gRPC code from our own `.proto` files.
//!
//! The protos are compiled by protox, a protobuf compiler written in Rust, so that building
//! this crate needs no `protoc` on the machine (the Go acceptance harness uses Debian's
//! protoc on the same files).

use std::path::PathBuf;

const PROTOS: [&str; 9] = [
    "go_plugin/health.proto",
    "go_plugin/controller.proto",
    "go_plugin/stdio.proto",
    "go_plugin/broker.proto",
    "google_rpc/status.proto",
    "nomad/hclspec.proto",
    "nomad/structs.proto",
    "nomad/base.proto",
    "nomad/driver.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The plugin binary is also its tasks' supervisor: its waiting code stays in one
    // section, as in backend-linux's binaries (see backend-linux/build.rs).
    println!("cargo::rustc-link-arg-bins=-zkeep-text-section-prefix");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let files = protox::compile(PROTOS, [&root])?;
    tonic_prost_build::configure()
        // The tests are a client; the plugin itself only serves.
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(files)?;
    Ok(())
}
