//! [`HostRuntime`]: the runtime the agent drives. Spawns keepers, lists and adopts containers from
//! `<run_dir>/containers`, stops and removes them, publishes [`crate::RuntimeEvent`]s.

/// The runtime on this host.
pub struct HostRuntime {}
