//! bosun: a lightweight Kubernetes node agent.
//!
//! The agent is the only crate that knows Kubernetes. It reads pods from a source (a manifest
//! folder now, the apiserver later), runs one worker per pod that drives the host runtime toward
//! the newest spec, and writes pod status.

pub mod claims;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod cri;
#[doc(hidden)]
pub mod fuzzing;
pub mod images;
pub mod manifest;
pub mod network;
pub mod pods;
pub mod projection;
pub mod security;
pub mod server;
pub mod tls_roots;
pub mod translate;
pub mod validation;
