//! Raw syscalls the runtime needs (pidfd, prctl, mount helpers), each `unsafe` block justified.
