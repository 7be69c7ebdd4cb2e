//! Links the keeper as a fixed-address executable (see `src/bin/keeper.rs`): a running keeper
//! per container is the agent's main per-pod cost, and a position-independent keeper copies its
//! relocated `.data.rel.ro` (~350 KiB of vtables and tables from libcontainer and serde) into
//! private memory in every one of them. Without `-pie` the linker resolves those addresses once,
//! at build time, and the pages stay shared with the page cache. The agent itself stays PIE.
//!
//! Also generates the CRI v1 gRPC services (`runtime.v1`, served by `src/cri`) from the vendored
//! `proto/cri/v1/api.proto`, parsed by protox (pure Rust: no system `protoc`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bin=bosun-keeper=-no-pie");
    let proto = "proto/cri/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], [std::path::Path::new("proto/cri/v1")])?;
    // Servers for the agent, clients for its tests; every method bosun does not serve answers
    // Unimplemented by default.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
