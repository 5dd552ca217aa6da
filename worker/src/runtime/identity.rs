//! Who the steps run as and where: the image config's `User` and `WorkingDir`. Resolved by PID 1 after
//! `pivot_root`, so that the image's own `/etc/passwd` and `/etc/group` are read and their symlinks resolve
//! inside the container, never on the host.

use super::rootfs::{Context, SetupError};
use nix::unistd::{Gid, Uid};
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the steps start when the image names no working dir: the checkout.
pub(crate) const WORKSPACE: &str = "/workspace";

/// The steps' working dir and user, ready to apply to each step's command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StepIdentity {
    /// The steps' cwd.
    pub cwd: PathBuf,
    /// None: root, as the container's PID 1 is.
    pub user: Option<User>,
}

/// A resolved user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: those of `/etc/group` that list the user by name.
    pub groups: Vec<u32>,
    /// From `/etc/passwd`, for `HOME` when the job sets none.
    pub home: Option<String>,
}

/// Resolves `user` and makes `cwd` (giving `/workspace` to the user when `chown_workspace`); call inside the
/// container, after `pivot_root`.
pub(crate) fn resolve(
    user: Option<&str>,
    cwd: &Path,
    chown_workspace: bool,
) -> Result<StepIdentity, SetupError> {
    let user = match user {
        None => None,
        Some(spec) => {
            let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
            let group = fs::read_to_string("/etc/group").unwrap_or_default();
            let user = parse_user(spec, &passwd, &group).map_err(|message| SetupError {
                what: format!("the image's user {spec:?}"),
                source: io::Error::new(io::ErrorKind::NotFound, message),
            })?;
            Some(user).filter(|u| u.uid != 0 || u.gid != 0 || !u.groups.is_empty())
        }
    };
    let cwd = cwd.to_owned();
    if !cwd.is_dir() {
        fs::create_dir_all(&cwd).what(|| format!("create the working dir {}", cwd.display()))?;
        if let Some(user) = &user {
            std::os::unix::fs::lchown(&cwd, Some(user.uid), Some(user.gid))
                .what(|| format!("chown the working dir {}", cwd.display()))?;
        }
    }
    if let Some(user) = user.as_ref().filter(|u| u.uid != 0 && chown_workspace) {
        // The checkout is written by the worker as root; a build running as the image's user must be able to
        // write in it. It is this job's own copy, removed when the job ends.
        chown_tree(Path::new(WORKSPACE), user.uid, user.gid)
            .what(|| format!("give {WORKSPACE} to uid {}", user.uid))?;
    }
    Ok(StepIdentity { cwd, user })
}

/// `uid[:gid]`, `name[:group]` (and mixes), as Docker reads `User`.
fn parse_user(spec: &str, passwd: &str, group: &str) -> Result<User, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 7)
        .find(|f| f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part));
    let (uid, mut gid, name, home) = match (&entry, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse()
                .map_err(|_| format!("bad uid in /etc/passwd: {}", f[2]))?,
            f[3].parse().unwrap_or(0),
            Some(f[0]),
            Some(f[5].to_owned()),
        ),
        (None, Ok(uid)) => (uid, 0, None, None),
        (None, Err(_)) => return Err(format!("no user {user_part:?} in the image's /etc/passwd")),
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 4)
        .collect();
    if let Some(wanted) = group_part {
        gid = match wanted.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == wanted)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("no group {wanted:?} in the image's /etc/group"))?,
        };
    }
    let mut supplementary: Vec<u32> = match name {
        Some(name) => groups
            .iter()
            .filter(|f| f[3].split(',').any(|member| member == name))
            .filter_map(|f| f[2].parse().ok())
            .collect(),
        None => Vec::new(),
    };
    supplementary.retain(|g| *g != gid);
    supplementary.sort_unstable();
    supplementary.dedup();
    Ok(User {
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

/// Chowns `dir` and everything under it, never following a symlink.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

impl StepIdentity {
    /// Makes `command` start in the working dir, as the user (groups, then gid, then uid: each step needs the
    /// privilege the next one drops), with `HOME` from `/etc/passwd` (`/root` for root) unless `env` sets it.
    #[allow(unsafe_code)] // pre_exec: std cannot set supplementary groups on stable Rust
    pub(crate) fn apply(&self, command: &mut Command, env: &[(String, String)]) {
        command.current_dir(&self.cwd);
        if !env.iter().any(|(k, _)| k == "HOME") {
            let home = self
                .user
                .as_ref()
                .map_or(Some("/root"), |u| u.home.as_deref());
            if let Some(home) = home {
                command.env("HOME", home);
            }
        }
        let Some(user) = &self.user else {
            return;
        };
        let groups: Vec<Gid> = user.groups.iter().copied().map(Gid::from_raw).collect();
        let (uid, gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
        // SAFETY: setgroups, setgid and setuid are async-signal-safe system calls, and the closure allocates
        // nothing (the group list is built before the fork).
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
                Ok(())
            })
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nbuilder:x:1000:\ndocker:x:999:builder,other\nstaff:x:50:\n";

    #[test]
    fn users_resolve_like_docker() {
        let user = |spec| parse_user(spec, PASSWD, GROUP);
        let builder = user("builder").unwrap();
        assert_eq!((builder.uid, builder.gid), (1000, 1000));
        assert_eq!(builder.groups, [999]);
        assert_eq!(builder.home.as_deref(), Some("/home/builder"));
        assert_eq!(user("1000").unwrap(), builder);
        let numeric = user("4242:7").unwrap();
        assert_eq!((numeric.uid, numeric.gid, numeric.home), (4242, 7, None));
        assert_eq!(user("builder:staff").unwrap().gid, 50);
        assert!(user("nobody").unwrap_err().contains("nobody"));
        assert!(user("builder:nogroup").unwrap_err().contains("nogroup"));
    }
}
