//! The container's stdin, handed out by the keeper (`kubectl attach -i`, `kubectl run -i`).
//!
//! A container with `stdin` (or `tty`) gets a pipe (or, with `tty`, the terminal libcontainer
//! creates through the console socket) whose writing end (the terminal's master) the keeper
//! holds. The keeper listens on `attach.sock` in the container folder; each connection receives
//! one byte carrying a duplicate of that descriptor (SCM_RIGHTS) and is closed. With
//! `stdinOnce` (and no terminal) the keeper gives its own copy up after the first hand-out, so
//! the container's stdin reaches EOF when that first session closes its copy (the kubelet's
//! semantics). Output is not carried here: it goes to the CRI log, which attach follows.
//!
//! Unix socket paths are limited to 108 bytes and container folders can be longer, so both
//! sides reach the socket through `/proc/self/fd/<dir fd>/<name>`.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The socket on which the keeper hands out the container's stdin.
pub const ATTACH_SOCKET: &str = "attach.sock";
/// The socket on which libcontainer sends the keeper a terminal's master.
pub const CONSOLE_SOCKET: &str = "console.sock";

/// A short path to `name` in `dir` through an `O_PATH` descriptor of `dir` (kept open by the
/// returned guard while the path is used).
fn short_path(dir: &Path, name: &str) -> io::Result<(OwnedFd, PathBuf)> {
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd()));
    Ok((fd, path))
}

/// Binds a listener at `dir/name` (a stale socket file is replaced).
pub fn bind(dir: &Path, name: &str) -> io::Result<UnixListener> {
    match std::fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let (_dir, path) = short_path(dir, name)?;
    UnixListener::bind(path)
}

/// Connects to the listener at `dir/name`.
pub fn connect(dir: &Path, name: &str) -> io::Result<UnixStream> {
    let (_dir, path) = short_path(dir, name)?;
    UnixStream::connect(path)
}

/// Sends one byte carrying `fd`.
pub fn send_fd(stream: &UnixStream, fd: RawFd) -> io::Result<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(b"f")];
    loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Receives the first descriptor sent on `stream` (others in the same message are closed).
/// `Ok(None)` when the peer closed without sending one.
pub fn recv_fd(stream: &UnixStream) -> io::Result<Option<OwnedFd>> {
    let mut buf = [0u8; 256];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        };
        let mut first = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel installed `fd` in our table for this message; we are
                    // its only owner.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if first.is_none() {
                        first = Some(owned);
                    }
                }
            }
        }
        if first.is_some() || msg.bytes == 0 {
            return Ok(first);
        }
    }
}

/// Asks the keeper of the container in `dir` for the container's stdin (a pipe's writing end,
/// or the terminal's master). `Ok(None)` when the container has no stdin (anymore: with
/// `stdinOnce` only the first session gets it).
pub fn stdin_of(dir: &Path) -> io::Result<Option<OwnedFd>> {
    let stream = match connect(dir, ATTACH_SOCKET) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    match recv_fd(&stream) {
        // The keeper closed the socket with our connection still queued: it gave the stdin up
        // (stdinOnce) or the container ended.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(None),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn hands_a_pipe_over_a_long_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Longer than a sockaddr_un can hold.
        let dir = tmp.path().join("x".repeat(100)).join("y".repeat(60));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let listener = bind(&dir, ATTACH_SOCKET).expect("bind");
        let (r, w) = crate::sys::pipe().expect("pipe");
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accept");
            send_fd(&conn, w.as_raw_fd()).expect("send");
            drop(w);
            // A second connection gets nothing: the peer sees EOF without a descriptor.
            let (conn, _) = listener.accept().expect("accept");
            drop(conn);
        });
        let got = stdin_of(&dir).expect("stdin").expect("a descriptor");
        let mut f = std::fs::File::from(got);
        f.write_all(b"hello").expect("write");
        drop(f);
        let mut out = String::new();
        std::fs::File::from(r)
            .read_to_string(&mut out)
            .expect("read");
        assert_eq!(out, "hello");
        assert!(stdin_of(&dir).expect("second").is_none());
        server.join().expect("join");
        // No socket: no stdin.
        assert!(stdin_of(tmp.path()).expect("none").is_none());
    }

    #[test]
    fn a_listener_closed_with_our_connection_queued_means_no_stdin() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let listener = bind(tmp.path(), ATTACH_SOCKET).expect("bind");
        // The keeper gives the stdin up (closes its listener) while our connection waits in
        // its queue, never accepted: the kernel resets it.
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(listener);
        });
        assert!(stdin_of(tmp.path()).expect("no error").is_none());
        closer.join().expect("join");
    }
}
