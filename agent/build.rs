//! Links the keeper as a fixed-address executable (see `src/bin/keeper.rs`): a running keeper
//! per container is the agent's main per-pod cost, and a position-independent keeper copies its
//! relocated `.data.rel.ro` (~350 KiB of vtables and tables from libcontainer and serde) into
//! private memory in every one of them. Without `-pie` the linker resolves those addresses once,
//! at build time, and the pages stay shared with the page cache. The agent itself stays PIE.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bin=bosun-keeper=-no-pie");
}
