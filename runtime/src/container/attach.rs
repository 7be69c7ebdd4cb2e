//! The stdin of a running container, from its keeper (see [`crate::keeper::attach`]).

use std::io;
use std::os::fd::OwnedFd;

use super::HostRuntime;

impl HostRuntime {
    /// The stdin of container `id`: the writing end of its stdin pipe, or its terminal's master
    /// (`tty`, which also takes window sizes). `Ok(None)` when it has none (no `stdin`, or a
    /// `stdinOnce` stdin an earlier session had). Blocks briefly: call from a blocking task.
    pub fn attach_stdin(&self, id: &str) -> io::Result<Option<OwnedFd>> {
        crate::keeper::attach::stdin_of(&self.inner.containers_dir().join(id))
    }
}
