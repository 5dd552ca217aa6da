//! Fewer masks for a host with many private entries in one place.

use super::{Mask, private};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// More private entries than this under one directory (counted after collapsing below it) and the directory is
/// hidden whole: each mask is a mount at every container start (~10 µs), and a build tree or a farm of data
/// dirs holds hundreds of root-only lock files and dirs.
const MAX_PER_DIR: usize = 16;

/// Directories this shallow are never hidden whole (`/etc`, `/var/lib`: a job needs what else they hold).
const MIN_COLLAPSE_DEPTH: usize = 3;

/// The masks for `found`: one per entry, but where a directory (of [`MIN_COLLAPSE_DEPTH`] components or more)
/// holds more than [`MAX_PER_DIR`], deepest first, one for the directory. Never a host path or a dir above
/// one: the host path is bound after the masks above it, and would show all again.
pub(super) fn collapse(found: &BTreeMap<PathBuf, Mask>, host_paths: &[PathBuf]) -> Vec<Mask> {
    let depth = |p: &Path| p.components().count() - 1;
    if found.len() <= MAX_PER_DIR {
        return found.values().cloned().collect();
    }
    let mut dirs: Vec<&Path> = found
        .keys()
        .flat_map(|path| path.ancestors().skip(1))
        .filter(|dir| depth(dir) >= MIN_COLLAPSE_DEPTH)
        .filter(|dir| !host_paths.iter().any(|shown| shown.starts_with(dir)))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    dirs.sort_by_key(|dir| std::cmp::Reverse(depth(dir)));
    let mut masks = found.clone();
    for dir in dirs {
        let under: Vec<PathBuf> = masks
            .range(dir.to_path_buf()..)
            .map(|(path, _)| path)
            .take_while(|path| path.starts_with(dir))
            .filter(|path| *path != dir)
            .cloned()
            .collect();
        if under.len() > MAX_PER_DIR {
            for path in under {
                masks.remove(&path);
            }
            masks.insert(dir.to_path_buf(), private(dir.to_path_buf(), true));
        }
    }
    masks.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_with_many_private_entries_is_hidden_whole_unless_shallow_or_shown() {
        let mut found = BTreeMap::new();
        let mut add = |path: String| {
            found.insert(PathBuf::from(&path), private(PathBuf::from(path), false));
        };
        for i in 0..20 {
            add(format!("/work/app/target/incremental/crate-{i}/s.lock"));
            add(format!("/etc/private-{i}"));
            add(format!("/opt/ci/home/.cargo/secret-{i}"));
        }
        add("/work/app/target/keep".into());
        add("/var/lib/one".into());
        let shown = [PathBuf::from("/opt/ci/home/.cargo")];
        let paths: Vec<PathBuf> = collapse(&found, &shown)
            .into_iter()
            .map(|m| m.path)
            .collect();
        assert!(paths.contains(&PathBuf::from("/work/app/target/incremental")));
        assert!(paths.contains(&PathBuf::from("/work/app/target/keep")));
        assert!(paths.contains(&PathBuf::from("/var/lib/one")));
        assert!(
            paths.contains(&PathBuf::from("/etc/private-19")),
            "/etc is never hidden whole"
        );
        assert!(
            paths.contains(&PathBuf::from("/opt/ci/home/.cargo/secret-19")),
            "a host path, or a dir above one, is never hidden whole"
        );
        assert_eq!(paths.len(), 1 + 1 + 1 + 20 + 20);
    }
}
