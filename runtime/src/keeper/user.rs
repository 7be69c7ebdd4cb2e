//! Resolves a container's user against the image's `/etc/passwd` and `/etc/group`, the way
//! containerd does for the CRI: `name`, `uid`, `name:group`, `uid:gid` (either side numeric or
//! a name); the primary gid comes from passwd when not given; the additional gids are the
//! primary gid, the groups listing the user as a member, then the pod's supplemental groups.

use std::io::Read;
use std::path::Path;

use crate::User;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {user:?}: no such user in the image's /etc/passwd")]
    NoUser { user: String },
    #[error("user {user:?}: no such group {group:?} in the image's /etc/group")]
    NoGroup { user: String, group: String },
    #[error("user {user:?}: empty user name")]
    Empty { user: String },
}

/// The ids a container process runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        if l.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|l| {
        if l.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// Pure resolution from the text of passwd and group.
pub fn resolve(
    user: &User,
    passwd: &str,
    group: &str,
    supplemental: &[u32],
) -> Result<Resolved, UserError> {
    let (uid, explicit_gid, name) = match user {
        User::Id { uid, gid } => {
            let name = passwd_entries(passwd)
                .find(|e| e.uid == *uid)
                .map(|e| e.name.to_string());
            (*uid, *gid, name)
        }
        User::Name(s) => {
            let (u, g) = match s.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (s.as_str(), None),
            };
            if u.is_empty() {
                return Err(UserError::Empty { user: s.clone() });
            }
            let (uid, name) = match u.parse::<u32>() {
                Ok(uid) => (
                    uid,
                    passwd_entries(passwd)
                        .find(|e| e.uid == uid)
                        .map(|e| e.name.to_string()),
                ),
                Err(_) => {
                    let e = passwd_entries(passwd)
                        .find(|e| e.name == u)
                        .ok_or_else(|| UserError::NoUser { user: s.clone() })?;
                    (e.uid, Some(e.name.to_string()))
                }
            };
            let gid = match g {
                None | Some("") => None,
                Some(g) => Some(match g.parse::<u32>() {
                    Ok(gid) => gid,
                    Err(_) => group_entries(group)
                        .find(|e| e.name == g)
                        .map(|e| e.gid)
                        .ok_or_else(|| UserError::NoGroup {
                            user: s.clone(),
                            group: g.to_string(),
                        })?,
                }),
            };
            (uid, gid, name)
        }
    };
    let gid = explicit_gid.unwrap_or_else(|| {
        passwd_entries(passwd)
            .find(|e| e.uid == uid)
            .map(|e| e.gid)
            .unwrap_or(0)
    });
    let mut additional = vec![gid];
    if let Some(name) = &name {
        for g in group_entries(group) {
            if g.name != name && g.members.contains(&name.as_str()) && !additional.contains(&g.gid)
            {
                additional.push(g.gid);
            }
        }
    }
    for g in supplemental {
        if !additional.contains(g) {
            additional.push(*g);
        }
    }
    Ok(Resolved {
        uid,
        gid,
        additional_gids: additional,
    })
}

/// Reads `/etc/passwd` and `/etc/group` inside `rootfs` (symlinks cannot leave it; missing
/// files count as empty) and resolves `user`.
pub fn resolve_in_root(
    rootfs: &Path,
    user: &User,
    supplemental: &[u32],
) -> Result<Resolved, UserError> {
    let read = |p: &str| {
        let mut s = String::new();
        if let Ok(mut f) = crate::sys::open_in_root(rootfs, Path::new(p)) {
            let _ = f.read_to_string(&mut s);
        }
        s
    };
    resolve(
        user,
        &read("/etc/passwd"),
        &read("/etc/group"),
        supplemental,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        app:x:1000:1001:App:/home/app:/bin/sh\n\
        nobody:x:65534:65534::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\n\
        app:x:1001:\n\
        wheel:x:10:root,app\n\
        audio:x:29:app\n\
        other:x:30:nobody\n";

    fn r(user: User, supp: &[u32]) -> Result<Resolved, UserError> {
        resolve(&user, PASSWD, GROUP, supp)
    }

    #[test]
    fn by_name() {
        let x = r(User::Name("app".into()), &[]).expect("resolve");
        assert_eq!(
            x,
            Resolved {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![1001, 10, 29]
            }
        );
    }

    #[test]
    fn by_uid_and_pairs() {
        let x = r(User::Name("1000".into()), &[]).expect("resolve");
        assert_eq!((x.uid, x.gid), (1000, 1001));
        assert_eq!(x.additional_gids, vec![1001, 10, 29]);
        let x = r(User::Name("app:wheel".into()), &[]).expect("resolve");
        assert_eq!((x.uid, x.gid), (1000, 10));
        assert_eq!(x.additional_gids, vec![10, 29]);
        let x = r(User::Name("1234:5678".into()), &[]).expect("resolve");
        assert_eq!((x.uid, x.gid, x.additional_gids), (1234, 5678, vec![5678]));
        let x = r(User::Name("4321".into()), &[]).expect("resolve");
        assert_eq!((x.uid, x.gid), (4321, 0));
    }

    #[test]
    fn numeric_ids_and_supplemental() {
        let x = r(User::Id { uid: 0, gid: None }, &[2000, 10]).expect("resolve");
        assert_eq!((x.uid, x.gid), (0, 0));
        assert_eq!(x.additional_gids, vec![0, 10, 2000]);
        let x = r(
            User::Id {
                uid: 1000,
                gid: Some(3000),
            },
            &[],
        )
        .expect("resolve");
        assert_eq!((x.uid, x.gid), (1000, 3000));
        assert_eq!(x.additional_gids, vec![3000, 10, 29]);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            r(User::Name("ghost".into()), &[]),
            Err(UserError::NoUser { .. })
        ));
        assert!(matches!(
            r(User::Name("app:ghosts".into()), &[]),
            Err(UserError::NoGroup { .. })
        ));
        assert!(matches!(
            r(User::Name(":1".into()), &[]),
            Err(UserError::Empty { .. })
        ));
    }

    #[test]
    fn missing_files_in_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let x = resolve_in_root(dir.path(), &User::Name("0".into()), &[]).expect("resolve");
        assert_eq!((x.uid, x.gid), (0, 0));
        assert!(resolve_in_root(dir.path(), &User::Name("app".into()), &[]).is_err());
    }
}
