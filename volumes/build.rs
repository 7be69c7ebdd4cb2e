//! Generates the gRPC clients of the CSI spec (`csi.v1`) and of the kubelet plugin registration
//! API (`pluginregistration`) from the vendored .proto files in `proto/`. The .proto files are
//! parsed by protox (pure Rust), so no system `protoc` is needed.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/csi/v1/csi.proto",
        "proto/pluginregistration/v1/api.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(
        files,
        [
            Path::new("proto/csi/v1"),
            Path::new("proto/pluginregistration/v1"),
        ],
    )?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
