//! Directories only root may enter. A worker's data dir holds what jobs wrote (workspaces, as host root
//! through the user namespace's map), image layers and mirrors: a set-id file or a secret there must be out of
//! reach of every other user of the host, whatever the umask or an earlier version left.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents, 0700) if needed and makes it mode 0700 if it is not. Returns whether it
/// had to take access away from others (an existing dir that group or others could enter).
pub fn private_dir(dir: &Path) -> io::Result<bool> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode == 0o700 {
        return Ok(false);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(mode & 0o077 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_become_0700_and_say_when_others_lose_access() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        assert!(!private_dir(&fresh).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), 0o700);
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(private_dir(&fresh).unwrap());
        assert_eq!(mode(&fresh), 0o700);
    }
}
