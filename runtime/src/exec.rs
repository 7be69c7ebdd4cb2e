//! Running a command inside a running container (exec hooks and probes) through the
//! single-threaded helper `bosun __exec` (libcontainer's tenant path clones without exec).
