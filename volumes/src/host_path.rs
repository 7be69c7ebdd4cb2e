//! hostPath: the kubelet's type checks, and creation for the `*OrCreate` types.

use std::fs::{self, DirBuilder, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::info;

use crate::{HostPathType, SetupError};

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

pub(crate) fn setup(name: &str, path: &Path, kind: HostPathType) -> Result<PathBuf, SetupError> {
    if !path.is_absolute() {
        return Err(SetupError::HostPathNotAbsolute {
            volume: name.to_string(),
            path: path.to_path_buf(),
        });
    }
    match kind {
        // No check. A missing path is created as a folder, as containerd's CRI plugin does for
        // bind sources under the kubelet: manifests rely on it, and bosun has no CRI runtime.
        HostPathType::Unset => {
            if stat(name, path)?.is_none() && fs::symlink_metadata(path).is_err() {
                info!(volume = name, path = %path.display(), "creating missing hostPath (no type)");
                DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(path)
                    .map_err(|source| create_err(name, path, source))?;
            }
        }
        HostPathType::DirectoryOrCreate => {
            if stat(name, path)?.is_none() {
                info!(volume = name, path = %path.display(), "creating hostPath directory");
                DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(path)
                    .map_err(|source| create_err(name, path, source))?;
            }
            check(name, path, HostPathType::Directory)?;
        }
        HostPathType::FileOrCreate => {
            if stat(name, path)?.is_none() {
                info!(volume = name, path = %path.display(), "creating hostPath file");
                if let Some(parent) = path.parent() {
                    DirBuilder::new()
                        .recursive(true)
                        .mode(DIR_MODE)
                        .create(parent)
                        .map_err(|source| create_err(name, parent, source))?;
                }
                // No O_EXCL and no truncation: a file that appeared meanwhile is kept as is.
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(FILE_MODE)
                    .open(path)
                    .map_err(|source| create_err(name, path, source))?;
            }
            check(name, path, HostPathType::File)?;
        }
        other => check(name, path, other)?,
    }
    Ok(path.to_path_buf())
}

fn create_err(name: &str, path: &Path, source: std::io::Error) -> SetupError {
    SetupError::Create {
        volume: name.to_string(),
        path: path.to_path_buf(),
        source,
    }
}

/// `stat` (following symlinks, as the kubelet does); `None` when nothing is there.
fn stat(name: &str, path: &Path) -> Result<Option<Metadata>, SetupError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SetupError::HostPathStat {
            volume: name.to_string(),
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What the kubelet's message calls each checked type.
pub(crate) fn expected_kind(kind: HostPathType) -> Option<&'static str> {
    Some(match kind {
        HostPathType::Directory | HostPathType::DirectoryOrCreate => "a directory",
        HostPathType::File | HostPathType::FileOrCreate => "a file",
        HostPathType::Socket => "a socket file",
        HostPathType::CharDevice => "a character device",
        HostPathType::BlockDevice => "a block device",
        HostPathType::Unset => return None,
    })
}

/// Checks that `path` exists and is of `kind` (a missing path fails the check too).
fn check(name: &str, path: &Path, kind: HostPathType) -> Result<(), SetupError> {
    let Some(expected) = expected_kind(kind) else {
        return Ok(());
    };
    let ok = stat(name, path)?.is_some_and(|m| {
        let t = m.file_type();
        match kind {
            HostPathType::Directory | HostPathType::DirectoryOrCreate => t.is_dir(),
            HostPathType::File | HostPathType::FileOrCreate => t.is_file(),
            HostPathType::Socket => t.is_socket(),
            HostPathType::CharDevice => t.is_char_device(),
            HostPathType::BlockDevice => t.is_block_device(),
            HostPathType::Unset => true,
        }
    });
    if ok {
        Ok(())
    } else {
        Err(SetupError::HostPathType {
            volume: name.to_string(),
            path: path.to_path_buf(),
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn host(path: &Path, kind: HostPathType) -> Result<PathBuf, SetupError> {
        setup("vol", path, kind)
    }

    fn type_err(r: Result<PathBuf, SetupError>) -> String {
        match r {
            Err(e @ SetupError::HostPathType { .. }) => e.to_string(),
            other => panic!("expected a type check error, got {other:?}"),
        }
    }

    #[test]
    fn directory_and_file_checks() {
        let td = tempfile::tempdir().expect("tempdir");
        let dir = td.path().join("d");
        let file = td.path().join("f");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(&file, b"x").expect("write");

        assert_eq!(host(&dir, HostPathType::Directory).expect("dir"), dir);
        assert_eq!(host(&file, HostPathType::File).expect("file"), file);
        assert_eq!(
            type_err(host(&file, HostPathType::Directory)),
            format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            )
        );
        assert_eq!(
            type_err(host(&dir, HostPathType::File)),
            format!(
                "hostPath type check failed: {} is not a file",
                dir.display()
            )
        );
        let missing = td.path().join("missing");
        type_err(host(&missing, HostPathType::Directory));
        type_err(host(&missing, HostPathType::File));
        assert_eq!(
            type_err(host(&file, HostPathType::Socket)),
            format!(
                "hostPath type check failed: {} is not a socket file",
                file.display()
            )
        );
        type_err(host(&file, HostPathType::CharDevice));
        type_err(host(&dir, HostPathType::BlockDevice));
        // Unset checks nothing: a file is fine, a missing path becomes a folder (containerd's
        // behaviour for bind sources), a dangling symlink is left alone.
        host(&file, HostPathType::Unset).expect("unset file");
        assert_eq!(host(&missing, HostPathType::Unset).expect("unset"), missing);
        assert!(missing.is_dir());
        let dangling = td.path().join("dangling");
        std::os::unix::fs::symlink(td.path().join("nowhere"), &dangling).expect("symlink");
        host(&dangling, HostPathType::Unset).expect("unset dangling");
        assert!(!td.path().join("nowhere").exists());
    }

    #[test]
    fn symlinks_are_followed_for_the_check() {
        let td = tempfile::tempdir().expect("tempdir");
        let dir = td.path().join("d");
        fs::create_dir(&dir).expect("mkdir");
        let link = td.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        host(&link, HostPathType::Directory).expect("a link to a dir is a dir");
    }

    #[test]
    fn or_create_types_create_with_kubelet_modes() {
        let td = tempfile::tempdir().expect("tempdir");
        let dir = td.path().join("a/b/c");
        host(&dir, HostPathType::DirectoryOrCreate).expect("create dir");
        assert!(dir.is_dir());
        host(&dir, HostPathType::DirectoryOrCreate).expect("idempotent");

        let file = td.path().join("x/y/file");
        host(&file, HostPathType::FileOrCreate).expect("create file");
        let m = fs::metadata(&file).expect("stat");
        assert!(m.is_file());
        assert_eq!(m.len(), 0);
        let umask_free = |want: u32, got: u32| got & want == got && got & 0o700 == 0o700 & want;
        assert!(umask_free(0o644, m.permissions().mode() & 0o777));
        let parent = fs::metadata(td.path().join("x/y")).expect("stat parent");
        assert!(umask_free(0o755, parent.permissions().mode() & 0o777));
        // An existing file keeps its content.
        fs::write(&file, b"content").expect("write");
        host(&file, HostPathType::FileOrCreate).expect("idempotent");
        assert_eq!(fs::read(&file).expect("read"), b"content");

        // Mismatches.
        type_err(host(&file, HostPathType::DirectoryOrCreate));
        type_err(host(&dir, HostPathType::FileOrCreate));
    }

    #[test]
    fn relative_host_paths_are_refused() {
        assert!(matches!(
            host(Path::new("relative/x"), HostPathType::Unset),
            Err(SetupError::HostPathNotAbsolute { .. })
        ));
    }

    #[test]
    fn socket_and_char_device() {
        let td = tempfile::tempdir().expect("tempdir");
        let sock = td.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        host(&sock, HostPathType::Socket).expect("socket");
        type_err(host(&sock, HostPathType::File));
        host(Path::new("/dev/null"), HostPathType::CharDevice).expect("/dev/null");
        type_err(host(Path::new("/dev/null"), HostPathType::BlockDevice));
        type_err(host(Path::new("/dev/null"), HostPathType::File));
    }

    #[test]
    fn block_device() {
        let found = fs::read_dir("/dev").ok().and_then(|rd| {
            rd.filter_map(Result::ok)
                .find(|e| e.file_type().is_ok_and(|t| t.is_block_device()))
                .map(|e| e.path())
        });
        let Some(dev) = found else {
            eprintln!("block_device skipped: no block device under /dev");
            return;
        };
        host(&dev, HostPathType::BlockDevice).expect("block device");
        type_err(host(&dev, HostPathType::CharDevice));
        type_err(host(&dev, HostPathType::Directory));
    }
}
