//! Links the keeper as a fixed-address executable (see `src/bin/keeper.rs`): a running keeper
//! per container is the agent's main per-pod cost, and a position-independent keeper copies its
//! relocated `.data.rel.ro` (~350 KiB of vtables and tables from libcontainer and serde) into
//! private memory in every one of them. Without `-pie` the linker resolves those addresses once,
//! at build time, and the pages stay shared with the page cache. The agent itself stays PIE.
//!
//! Also generates, from the vendored .proto files in `proto/` (parsed by protox, pure Rust: no
//! system `protoc`):
//! - the CRI v1 gRPC services (`runtime.v1`, served by `src/cri`; every method bosun does not serve
//!   answers Unimplemented by default);
//! - the device plugin API (`deviceplugin/v1beta1`: the `Registration` server the agent serves, the
//!   `DevicePlugin` client it calls) and the pod resources API (`podresources/v1`: the
//!   `PodResourcesLister` server);
//! - the DRA kubelet plugin API (`dra/v1`: the `DRAPlugin` client the agent calls, the server its
//!   tests run).

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bin=bosun-keeper=-no-pie");
    let cri = "proto/cri/v1/api.proto";
    println!("cargo:rerun-if-changed={cri}");
    let fds = protox::compile([cri], [Path::new("proto/cri/v1")])?;
    // Servers for the agent, clients for its tests.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    let files = [
        "deviceplugin/v1beta1/api.proto",
        "podresources/v1/api.proto",
        "dra/v1/api.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    let fds = protox::compile(files, [Path::new("proto")])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
