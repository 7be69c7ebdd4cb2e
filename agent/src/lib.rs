//! bosun: a lightweight Kubernetes node agent.
//!
//! The agent is the only crate that knows Kubernetes. It reads pods from a source (a manifest
//! folder, the apiserver, or both), runs one worker per pod that drives the runtime toward the
//! newest spec, and writes pod status. ARCHITECTURE.md draws its layers; `tests/layers.rs`
//! keeps them.

pub mod admission;
pub mod assembly;
pub mod certs;
pub mod claims;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod cri;
pub mod devices;
pub mod dra;
pub mod eviction;
pub mod fieldpath;
#[doc(hidden)]
pub mod fuzzing;
pub mod images;
pub mod manifest;
pub mod metrics;
pub mod network;
pub mod podnet;
pub mod podresources;
pub mod pods;
pub mod projection;
pub mod quantity;
pub mod reasons;
pub mod security;
pub mod server;
pub mod shutdown;
pub mod tls_roots;
pub mod translate;
pub mod validation;
