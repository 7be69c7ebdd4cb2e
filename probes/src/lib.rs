//! Probes: exec / httpGet / tcpSocket / grpc and their period and threshold logic.
//!
//! Filled in by the networking and probes issue; the agent runs postStart/preStop exec and sleep
//! hooks itself until then.
