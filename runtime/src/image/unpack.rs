//! Unpacks one layer tar into a folder, exactly and safely.
//!
//! Every entry is written by hand (not `tar::Entry::unpack`): regular files, directories,
//! symlinks, hardlinks within the layer, devices and fifos, with ownership, modes, extended
//! attributes (PAX `SCHILY.xattr.*`) and mtimes. OCI whiteouts become overlayfs whiteouts:
//! `.wh.<name>` turns into a 0/0 character device `<name>`, `.wh..wh..opq` into the xattr
//! `trusted.overlay.opaque=y` on its directory.
//!
//! Safety: paths are relative, `..` and absolute paths are refused, and no symlink is ever
//! followed while creating an entry: every parent component is checked with `lstat` (nothing
//! else writes into the folder while it is unpacked; it is a private temporary folder), files are
//! created with `O_EXCL|O_NOFOLLOW`, and metadata calls use the no-follow variants.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::sys::stat::{self, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use tar::EntryType;

use super::sys;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("reading layer tar: {source}")]
    Read { source: io::Error },
    #[error("refusing layer entry {path:?}: {reason}")]
    UnsafePath { path: PathBuf, reason: String },
    #[error("layer entry {path:?} has unsupported type {kind}")]
    Unsupported { path: PathBuf, kind: String },
    #[error("creating {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("setting {what} of {path}: {source}")]
    Metadata {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

/// What an unpacked layer holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Bytes of regular file content.
    pub size: u64,
    pub entries: u64,
}

/// Metadata of one entry, PAX records applied over the ustar header.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Unpacker<'a> {
    root: &'a Path,
    /// Running as root: apply ownership, devices and trusted xattrs for real.
    privileged: bool,
    /// Directory modes and mtimes, applied once all entries are written.
    dirs: Vec<(PathBuf, u32, TimeSpec)>,
    stats: UnpackStats,
}

/// Unpacks the (uncompressed) tar stream `reader` into the existing, empty folder `root`.
/// Does not read past the tar's end-of-archive blocks; the caller drains `reader` if it needs the
/// whole stream (to check a digest).
pub fn unpack_layer<R: Read>(reader: R, root: &Path) -> Result<UnpackStats, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut unpacker = Unpacker {
        root,
        privileged: nix::unistd::geteuid().is_root(),
        dirs: Vec::new(),
        stats: UnpackStats::default(),
    };
    let entries = archive
        .entries()
        .map_err(|source| UnpackError::Read { source })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| UnpackError::Read { source })?;
        unpacker.entry(&mut entry)?;
        unpacker.stats.entries += 1;
    }
    // Directory modes and mtimes last: creating their contents changed the mtimes, and a
    // read-only directory mode must not stop a non-root unpack from filling it.
    for (path, mode, mtime) in std::mem::take(&mut unpacker.dirs) {
        // A later entry may have replaced the directory, or one of its parents, with something
        // else (even a symlink): only a directory still reached through directories is touched.
        if !unpacker.is_real_dir(&path) {
            continue;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(|source| {
            UnpackError::Metadata {
                path: path.clone(),
                what: "mode",
                source,
            }
        })?;
        set_times(&path, mtime)?;
    }
    Ok(unpacker.stats)
}

/// Turns a tar path into a relative path of normal components.
fn sanitize(raw: &[u8]) -> Result<PathBuf, UnpackError> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::UnsafePath {
                    path: path.to_path_buf(),
                    reason: "path contains '..'".to_string(),
                })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::UnsafePath {
                    path: path.to_path_buf(),
                    reason: "absolute path".to_string(),
                })
            }
        }
    }
    Ok(out)
}

fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, UnpackError> {
    let read = |source| UnpackError::Read { source };
    let header = entry.header();
    let mut meta = Meta {
        mode: header.mode().map_err(read)? & 0o7777,
        uid: u32::try_from(header.uid().map_err(read)?).unwrap_or(u32::MAX),
        gid: u32::try_from(header.gid().map_err(read)?).unwrap_or(u32::MAX),
        mtime: TimeSpec::new(i64::try_from(header.mtime().map_err(read)?).unwrap_or(0), 0),
        xattrs: Vec::new(),
    };
    if let Some(extensions) = entry.pax_extensions().map_err(read)? {
        for ext in extensions {
            let ext = ext.map_err(read)?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let text = std::str::from_utf8(value).unwrap_or("");
            match key {
                b"uid" => meta.uid = text.parse().unwrap_or(meta.uid),
                b"gid" => meta.gid = text.parse().unwrap_or(meta.gid),
                b"mtime" => meta.mtime = parse_pax_time(text).unwrap_or(meta.mtime),
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        meta.xattrs.push((name.to_vec(), value.to_vec()));
                    }
                }
            }
        }
    }
    Ok(meta)
}

/// PAX times are decimal seconds with an optional fraction: `1700000000.123456789`.
fn parse_pax_time(text: &str) -> Option<TimeSpec> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, digit) in frac.bytes().take(9).enumerate() {
        if !digit.is_ascii_digit() {
            return None;
        }
        nanos += i64::from(digit - b'0') * 10i64.pow(8 - i as u32);
    }
    // A negative time with a fraction means secs - fraction.
    if secs < 0 && nanos > 0 {
        return Some(TimeSpec::new(secs - 1, 1_000_000_000 - nanos));
    }
    Some(TimeSpec::new(secs, nanos))
}

fn set_times(path: &Path, mtime: TimeSpec) -> Result<(), UnpackError> {
    stat::utimensat(None, path, &mtime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(|errno| {
        UnpackError::Metadata {
            path: path.to_path_buf(),
            what: "mtime",
            source: errno.into(),
        }
    })
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        match kind {
            // Handled inside the tar crate or meaningless for a layer.
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => return Ok(()),
            _ => {}
        }
        let rel = sanitize(&entry.path_bytes())?;
        let meta = meta_of(entry)?;

        if let Some(name) = rel.file_name().and_then(|n| n.to_str()) {
            if name == OPAQUE_MARKER {
                return self.opaque(rel.parent().unwrap_or(Path::new("")));
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                if hidden.starts_with(WHITEOUT_PREFIX) {
                    // Other aufs metadata (`.wh..wh..plnk`, ...): not part of the filesystem.
                    tracing::debug!(path = %rel.display(), "skipping aufs metadata entry");
                    return Ok(());
                }
                return self.whiteout(&rel, hidden, &meta);
            }
        }

        if rel.as_os_str().is_empty() && kind != EntryType::Directory {
            return Err(UnpackError::UnsafePath {
                path: rel,
                reason: "a non-directory entry for the layer root".to_string(),
            });
        }

        match kind {
            EntryType::Directory => self.directory(&rel, meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.regular(entry, &rel, &meta)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| UnpackError::UnsafePath {
                        path: rel.clone(),
                        reason: "symlink without target".to_string(),
                    })?
                    .into_owned();
                self.symlink(&rel, &target, &meta)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| UnpackError::UnsafePath {
                        path: rel.clone(),
                        reason: "hardlink without target".to_string(),
                    })?
                    .into_owned();
                self.hardlink(&rel, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let read = |source| UnpackError::Read { source };
                // A fifo has no device numbers; some writers leave those fields blank.
                let (major, minor) = if kind == EntryType::Fifo {
                    (0, 0)
                } else {
                    (
                        entry.header().device_major().map_err(read)?.unwrap_or(0),
                        entry.header().device_minor().map_err(read)?.unwrap_or(0),
                    )
                };
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                self.node(&rel, sflag, major, minor, &meta)
            }
            other => Err(UnpackError::Unsupported {
                path: rel,
                kind: format!("{other:?}"),
            }),
        }
    }

    /// Makes sure every component of `rel_dir` is a real directory (creating missing ones with
    /// mode 0755), never going through a symlink. Returns the full path.
    fn ensure_dirs(&self, rel_dir: &Path) -> Result<PathBuf, UnpackError> {
        let mut cur = self.root.to_path_buf();
        for component in rel_dir.components() {
            cur.push(component);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(UnpackError::UnsafePath {
                        path: rel_dir.to_path_buf(),
                        reason: format!(
                            "parent {} is a symlink",
                            cur.strip_prefix(self.root).unwrap_or(&cur).display()
                        ),
                    })
                }
                Ok(_) => {
                    return Err(UnpackError::UnsafePath {
                        path: rel_dir.to_path_buf(),
                        reason: format!(
                            "parent {} is not a directory",
                            cur.strip_prefix(self.root).unwrap_or(&cur).display()
                        ),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&cur)
                    .map_err(|source| UnpackError::Create {
                        path: cur.clone(),
                        source,
                    })?,
                Err(source) => {
                    return Err(UnpackError::Create {
                        path: cur.clone(),
                        source,
                    })
                }
            }
        }
        Ok(cur)
    }

    /// Whether `full` (under the root) is a directory reached only through directories.
    fn is_real_dir(&self, full: &Path) -> bool {
        let Ok(rel) = full.strip_prefix(self.root) else {
            return false;
        };
        let mut cur = self.root.to_path_buf();
        for component in rel.components() {
            cur.push(component);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                _ => return false,
            }
        }
        true
    }

    /// Prepares the parents of `rel` and removes whatever is at `rel` (a directory is kept when
    /// `keep_dir`). Returns the full path and whether a directory was kept.
    fn prepare(&self, rel: &Path, keep_dir: bool) -> Result<(PathBuf, bool), UnpackError> {
        self.ensure_dirs(rel.parent().unwrap_or(Path::new("")))?;
        let full = self.root.join(rel);
        let removed = |source| UnpackError::Create {
            path: full.clone(),
            source,
        };
        match fs::symlink_metadata(&full) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((full, false)),
            Err(source) => Err(removed(source)),
            Ok(m) if m.is_dir() && keep_dir => Ok((full, true)),
            // remove_dir_all does not follow symlinks.
            Ok(m) if m.is_dir() => fs::remove_dir_all(&full)
                .map_err(removed)
                .map(|()| (full.clone(), false)),
            Ok(_) => fs::remove_file(&full)
                .map_err(removed)
                .map(|()| (full.clone(), false)),
        }
    }

    fn chown(&self, path: &Path, meta: &Meta) -> Result<(), UnpackError> {
        if !self.privileged {
            return Ok(());
        }
        nix::unistd::fchownat(
            None,
            path,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| UnpackError::Metadata {
            path: path.to_path_buf(),
            what: "owner",
            source: errno.into(),
        })
    }

    /// Sets the entry's xattrs; call after chown, which clears `security.capability`.
    fn xattrs(&self, path: &Path, meta: &Meta) -> Result<(), UnpackError> {
        for (name, value) in &meta.xattrs {
            if name.starts_with(b"trusted.overlay.") {
                // Would let a layer forge whiteouts, redirects or metacopy for overlayfs.
                tracing::warn!(path = %path.display(), name = %String::from_utf8_lossy(name), "dropping overlay xattr from layer");
                continue;
            }
            if let Err(source) = sys::lsetxattr(path, name, value) {
                let tolerated = matches!(source.raw_os_error(), Some(libc::ENOTSUP))
                    || (!self.privileged && matches!(source.raw_os_error(), Some(libc::EPERM)));
                if tolerated {
                    tracing::warn!(path = %path.display(), name = %String::from_utf8_lossy(name), error = %source, "xattr not kept");
                    continue;
                }
                return Err(UnpackError::Metadata {
                    path: path.to_path_buf(),
                    what: "xattr",
                    source,
                });
            }
        }
        Ok(())
    }

    fn directory(&mut self, rel: &Path, meta: Meta) -> Result<(), UnpackError> {
        let full = if rel.as_os_str().is_empty() {
            self.root.to_path_buf()
        } else {
            let (full, kept) = self.prepare(rel, true)?;
            if !kept {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&full)
                    .map_err(|source| UnpackError::Create {
                        path: full.clone(),
                        source,
                    })?;
            }
            full
        };
        self.chown(&full, &meta)?;
        self.xattrs(&full, &meta)?;
        // Until the end the directory stays writable for us.
        fs::set_permissions(&full, fs::Permissions::from_mode(meta.mode | 0o700)).map_err(
            |source| UnpackError::Metadata {
                path: full.clone(),
                what: "mode",
                source,
            },
        )?;
        self.dirs.push((full, meta.mode, meta.mtime));
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let (full, _) = self.prepare(rel, false)?;
        let create = |source| UnpackError::Create {
            path: full.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&full)
            .map_err(create)?;
        let written = io::copy(entry, &mut file).map_err(|source| UnpackError::Read { source })?;
        self.stats.size += written;
        if self.privileged {
            std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid)).map_err(|source| {
                UnpackError::Metadata {
                    path: full.clone(),
                    what: "owner",
                    source,
                }
            })?;
        }
        file.set_permissions(fs::Permissions::from_mode(meta.mode))
            .map_err(|source| UnpackError::Metadata {
                path: full.clone(),
                what: "mode",
                source,
            })?;
        self.xattrs(&full, meta)?;
        stat::futimens(file.as_raw_fd(), &meta.mtime, &meta.mtime).map_err(|errno| {
            UnpackError::Metadata {
                path: full.clone(),
                what: "mtime",
                source: errno.into(),
            }
        })?;
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, target: &[u8], meta: &Meta) -> Result<(), UnpackError> {
        let (full, _) = self.prepare(rel, false)?;
        // The target is only data: it is never followed here, whatever it says.
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &full).map_err(|source| {
            UnpackError::Create {
                path: full.clone(),
                source,
            }
        })?;
        self.chown(&full, meta)?;
        self.xattrs(&full, meta)?;
        set_times(&full, meta.mtime)
    }

    fn hardlink(&mut self, rel: &Path, target: &[u8]) -> Result<(), UnpackError> {
        let target_rel = sanitize(target)?;
        if target_rel == rel {
            return Ok(());
        }
        // The target must already be in this layer, reached without symlinks in its parents.
        let mut cur = self.root.to_path_buf();
        if let Some(parent) = target_rel.parent() {
            for component in parent.components() {
                cur.push(component);
                let is_dir = fs::symlink_metadata(&cur)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                if !is_dir {
                    return Err(UnpackError::UnsafePath {
                        path: rel.to_path_buf(),
                        reason: format!(
                            "hardlink target {} is not inside the layer",
                            target_rel.display()
                        ),
                    });
                }
            }
        }
        let target_full = self.root.join(&target_rel);
        match fs::symlink_metadata(&target_full) {
            Ok(m) if !m.is_dir() => {}
            _ => {
                return Err(UnpackError::UnsafePath {
                    path: rel.to_path_buf(),
                    reason: format!(
                        "hardlink target {} is missing or a directory",
                        target_rel.display()
                    ),
                })
            }
        }
        let (full, _) = self.prepare(rel, false)?;
        // linkat(2) without AT_SYMLINK_FOLLOW: a symlink target is linked itself, not followed.
        fs::hard_link(&target_full, &full).map_err(|source| UnpackError::Create {
            path: full.clone(),
            source,
        })
    }

    fn node(
        &mut self,
        rel: &Path,
        kind: SFlag,
        major: u32,
        minor: u32,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let (full, _) = self.prepare(rel, false)?;
        stat::mknod(
            &full,
            kind,
            Mode::from_bits_truncate(meta.mode),
            stat::makedev(u64::from(major), u64::from(minor)),
        )
        .map_err(|errno| UnpackError::Create {
            path: full.clone(),
            source: errno.into(),
        })?;
        self.chown(&full, meta)?;
        // A fresh node, not a symlink: the path-based chmod cannot be redirected.
        fs::set_permissions(&full, fs::Permissions::from_mode(meta.mode)).map_err(|source| {
            UnpackError::Metadata {
                path: full.clone(),
                what: "mode",
                source,
            }
        })?;
        self.xattrs(&full, meta)?;
        set_times(&full, meta.mtime)
    }

    /// `.wh.<name>`: an overlayfs whiteout (character device 0/0) named `<name>`.
    fn whiteout(&mut self, rel: &Path, hidden: &str, meta: &Meta) -> Result<(), UnpackError> {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(UnpackError::UnsafePath {
                path: rel.to_path_buf(),
                reason: "whiteout of an invalid name".to_string(),
            });
        }
        let target = rel.with_file_name(hidden);
        let (full, _) = self.prepare(&target, false)?;
        stat::mknod(&full, SFlag::S_IFCHR, Mode::empty(), stat::makedev(0, 0)).map_err(
            |errno| UnpackError::Create {
                path: full.clone(),
                source: errno.into(),
            },
        )?;
        set_times(&full, meta.mtime)
    }

    /// `.wh..wh..opq`: the directory hides everything below it in lower layers.
    fn opaque(&mut self, rel_dir: &Path) -> Result<(), UnpackError> {
        let full = self.ensure_dirs(rel_dir)?;
        sys::lsetxattr(&full, OPAQUE_XATTR, b"y").map_err(|source| UnpackError::Metadata {
            path: full.clone(),
            what: "opaque xattr",
            source,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use tar::Header;

    /// Builds layer tars by hand, including entries the tar crate's own setters refuse.
    pub(crate) struct TarBuilder {
        builder: tar::Builder<Vec<u8>>,
    }

    pub(crate) fn header(path: &str, kind: EntryType, size: u64, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h
    }

    impl TarBuilder {
        pub(crate) fn new() -> Self {
            Self {
                builder: tar::Builder::new(Vec::new()),
            }
        }

        pub(crate) fn add(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
            h.set_cksum();
            self.builder.append(&h, data).unwrap();
            self
        }

        pub(crate) fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
            self.add(header(path, EntryType::Directory, 0, mode), &[])
        }

        pub(crate) fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
            self.add(
                header(path, EntryType::Regular, data.len() as u64, 0o644),
                data,
            )
        }

        pub(crate) fn link(&mut self, kind: EntryType, path: &str, target: &str) -> &mut Self {
            let mut h = header(path, kind, 0, 0o777);
            h.set_link_name_literal(target).unwrap();
            self.add(h, &[])
        }

        /// A PAX extended header for the next entry.
        pub(crate) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            let mut data = Vec::new();
            for (key, value) in records {
                let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
                let mut len = body_len + 1;
                while len != body_len + len.to_string().len() {
                    len = body_len + len.to_string().len();
                }
                data.extend_from_slice(format!("{len} {key}=").as_bytes());
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            let h = header("PaxHeaders/x", EntryType::XHeader, data.len() as u64, 0o644);
            self.add(h, &data)
        }

        pub(crate) fn finish(&mut self) -> Vec<u8> {
            self.builder.finish().unwrap();
            self.builder.get_ref().clone()
        }
    }

    fn unpack(tar: &[u8]) -> (tempfile::TempDir, Result<UnpackStats, UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fs");
        fs::create_dir(&root).unwrap();
        let result = unpack_layer(tar, &root);
        (dir, result)
    }

    #[test]
    fn unpacks_files_dirs_symlinks_and_hardlinks() {
        let tar = TarBuilder::new()
            .dir("bin/", 0o755)
            .file("bin/busybox", b"#!binary")
            .link(EntryType::Symlink, "bin/sh", "busybox")
            .link(EntryType::Symlink, "bin/abs", "/etc/shadow")
            .link(EntryType::Link, "bin/hard", "bin/busybox")
            .file("./etc/passwd", b"root:x:0:0::/:/bin/sh\n")
            .finish();
        let (dir, result) = unpack(&tar);
        let stats = result.unwrap();
        let root = dir.path().join("fs");
        assert_eq!(stats.size, 8 + 22);
        assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), b"#!binary");
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        // Absolute symlink targets are kept verbatim (they resolve inside the container).
        assert_eq!(
            fs::read_link(root.join("bin/abs")).unwrap(),
            Path::new("/etc/shadow")
        );
        let a = fs::metadata(root.join("bin/busybox")).unwrap();
        let b = fs::metadata(root.join("bin/hard")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert_eq!(a.mode() & 0o7777, 0o644);
        assert_eq!(a.mtime(), 1_000_000);
        assert_eq!(
            fs::read(root.join("etc/passwd")).unwrap(),
            b"root:x:0:0::/:/bin/sh\n"
        );
    }

    #[test]
    fn directory_modes_and_mtimes_are_set_after_their_contents() {
        let mut h = header("ro/", EntryType::Directory, 0, 0o555);
        h.set_mtime(42);
        let tar = TarBuilder::new()
            .add(h, &[])
            .file("ro/a", b"a")
            .file("ro/b", b"b")
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        let m = fs::metadata(dir.path().join("fs/ro")).unwrap();
        assert_eq!(m.mtime(), 42);
        assert_eq!(m.mode() & 0o7777, 0o555);
        fs::set_permissions(dir.path().join("fs/ro"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn pax_records_override_the_header() {
        let tar = TarBuilder::new()
            .pax(&[
                ("mtime", b"1234.5"),
                ("path", b"a-very-long-name/".repeat(10).as_slice()),
            ])
            .file("short", b"x")
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        let path = dir.path().join("fs").join("a-very-long-name/".repeat(10));
        let m = fs::metadata(path.to_str().unwrap().trim_end_matches('/')).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1234, 500_000_000));
    }

    #[test]
    fn refuses_parent_dir_and_absolute_paths() {
        for bad in ["../escape", "a/../../escape", "/etc/escape"] {
            let tar = TarBuilder::new().file(bad, b"x").finish();
            let (dir, result) = unpack(&tar);
            let err = result.unwrap_err();
            assert!(
                matches!(err, UnpackError::UnsafePath { .. }),
                "{bad}: {err}"
            );
            assert!(!dir.path().join("escape").exists());
        }
    }

    #[test]
    fn never_writes_through_a_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        // A symlinked parent, then entries below it of every kind.
        for second in [
            TarBuilder::new()
                .link(EntryType::Symlink, "evil", &target)
                .file("evil/file", b"x")
                .finish(),
            TarBuilder::new()
                .link(EntryType::Symlink, "evil", &target)
                .dir("evil/sub/", 0o755)
                .finish(),
            TarBuilder::new()
                .link(EntryType::Symlink, "evil", &target)
                .link(EntryType::Symlink, "evil/link", "/")
                .finish(),
            TarBuilder::new()
                .file("f", b"x")
                .link(EntryType::Symlink, "evil", &target)
                .link(EntryType::Link, "evil/hard", "f")
                .finish(),
        ] {
            let (_dir, result) = unpack(&second);
            let err = result.unwrap_err();
            assert!(matches!(err, UnpackError::UnsafePath { .. }), "{err}");
            assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn a_symlink_replacing_a_file_is_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let tar = TarBuilder::new()
            .link(EntryType::Symlink, "x", victim.to_str().unwrap())
            .file("x", b"overwritten")
            // A directory replaced by a symlink: its deferred mode must not land on the target.
            .dir("d/", 0o777)
            .link(EntryType::Symlink, "d", victim.to_str().unwrap())
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(fs::read(dir.path().join("fs/x")).unwrap(), b"overwritten");
    }

    #[test]
    fn refuses_hardlinks_outside_the_layer() {
        for target in ["../outside", "/etc/passwd", "missing"] {
            let tar = TarBuilder::new()
                .link(EntryType::Link, "h", target)
                .finish();
            let (_dir, result) = unpack(&tar);
            assert!(
                matches!(result, Err(UnpackError::UnsafePath { .. })),
                "{target}: {result:?}"
            );
        }
    }

    #[test]
    fn fifos_are_created() {
        let tar = TarBuilder::new()
            .add(header("p", EntryType::Fifo, 0, 0o640), &[])
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        let m = fs::symlink_metadata(dir.path().join("fs/p")).unwrap();
        assert!(m.file_type().is_fifo());
        assert_eq!(m.mode() & 0o7777, 0o640);
    }

    #[test]
    fn pax_time_parsing() {
        assert_eq!(parse_pax_time("12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(
            parse_pax_time("12.25"),
            Some(TimeSpec::new(12, 250_000_000))
        );
        assert_eq!(parse_pax_time("-1.5"), Some(TimeSpec::new(-2, 500_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }

    #[test]
    #[ignore = "needs root: mknod of whiteout devices and trusted.* xattrs"]
    fn converts_whiteouts_to_overlayfs_format() {
        let tar = TarBuilder::new()
            .dir("etc/", 0o755)
            .file("etc/.wh.motd", b"")
            .file(".wh.gone", b"")
            .dir("var/cache/", 0o755)
            .file("var/cache/.wh..wh..opq", b"")
            .file("var/cache/new", b"n")
            .file("opq-only/.wh..wh..opq", b"")
            .file(".wh..wh..plnk", b"")
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        let root = dir.path().join("fs");
        for whiteout in ["etc/motd", "gone"] {
            let m = fs::symlink_metadata(root.join(whiteout)).unwrap();
            assert!(m.file_type().is_char_device(), "{whiteout}");
            assert_eq!(m.rdev(), 0);
            assert_eq!((m.uid(), m.gid()), (0, 0));
        }
        assert!(!root.join("etc/.wh.motd").exists());
        for opaque in ["var/cache", "opq-only"] {
            assert_eq!(
                sys::lgetxattr(&root.join(opaque), OPAQUE_XATTR)
                    .unwrap()
                    .as_deref(),
                Some(&b"y"[..]),
                "{opaque}"
            );
        }
        assert!(!root.join("var/cache/.wh..wh..opq").exists());
        assert_eq!(fs::read(root.join("var/cache/new")).unwrap(), b"n");
        assert!(!root.join(".wh..wh..plnk").exists());
        assert!(!root.join("etc").join("..").join(".wh.gone").exists());
    }

    #[test]
    #[ignore = "needs root: lchown, device nodes and trusted.* xattrs"]
    fn applies_ownership_devices_and_xattrs() {
        let mut file = header("owned", EntryType::Regular, 1, 0o4755);
        file.set_uid(1000);
        file.set_gid(2000);
        let mut link = header("link", EntryType::Symlink, 0, 0o777);
        link.set_link_name_literal("owned").unwrap();
        link.set_uid(1001);
        link.set_gid(2001);
        let mut null = header("dev/null", EntryType::Char, 0, 0o666);
        null.set_device_major(1).unwrap();
        null.set_device_minor(3).unwrap();
        let mut big = header("big", EntryType::Regular, 0, 0o644);
        big.set_uid(1);
        let tar = TarBuilder::new()
            .pax(&[
                ("SCHILY.xattr.trusted.test", b"v1"),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ])
            .add(file, b"x")
            .add(link, &[])
            .add(null, &[])
            .pax(&[("uid", b"3000000"), ("gid", b"3000001")])
            .add(big, &[])
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        let root = dir.path().join("fs");
        let m = fs::symlink_metadata(root.join("owned")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 2000, 0o4755));
        assert_eq!(
            sys::lgetxattr(&root.join("owned"), b"trusted.test")
                .unwrap()
                .as_deref(),
            Some(&b"v1"[..])
        );
        // Overlay xattrs from a layer are dropped.
        assert_eq!(
            sys::lgetxattr(&root.join("owned"), OPAQUE_XATTR).unwrap(),
            None
        );
        let l = fs::symlink_metadata(root.join("link")).unwrap();
        assert!(l.file_type().is_symlink());
        assert_eq!((l.uid(), l.gid()), (1001, 2001));
        let n = fs::symlink_metadata(root.join("dev/null")).unwrap();
        assert!(n.file_type().is_char_device());
        assert_eq!(n.rdev(), stat::makedev(1, 3));
        let b = fs::symlink_metadata(root.join("big")).unwrap();
        assert_eq!((b.uid(), b.gid()), (3_000_000, 3_000_001));
    }
}
