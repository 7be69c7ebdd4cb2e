//! [`crate::ContainerSpec`] + [`crate::Sandbox`] -> OCI runtime spec (`config.json`).
//! Pure functions: no I/O except reading the agent's own rlimits.
