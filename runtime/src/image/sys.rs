//! The few raw syscalls the image store needs that nix does not wrap (extended attributes on
//! paths without following symlinks), each `unsafe` block justified.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte in name"))
}

/// `lsetxattr(2)`: sets `name` on `path` itself, never on what a symlink points to.
pub(crate) fn lsetxattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let path = cstring(path.as_os_str().as_bytes())?;
    let name = cstring(name)?;
    // SAFETY: `path` and `name` are valid NUL-terminated strings that outlive the call;
    // `value` points to `value.len()` readable bytes; the kernel does not keep the pointers.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `lgetxattr(2)`: reads `name` of `path` itself; `Ok(None)` when the attribute is absent.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn lgetxattr(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let path = cstring(path.as_os_str().as_bytes())?;
    let name = cstring(name)?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `path` and `name` are valid NUL-terminated strings; `buf` is writable for
    // `buf.len()` bytes and the kernel writes at most that many.
    let rc = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(err),
        };
    }
    buf.truncate(rc as usize);
    Ok(Some(buf))
}

/// `syncfs(2)`: flushes the filesystem holding `file` (used once per unpacked layer instead of an
/// fsync per file).
pub(crate) fn syncfs(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open and owned by `file` for the duration of the call.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
