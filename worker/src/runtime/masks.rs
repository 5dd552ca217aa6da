//! Which host paths a job must not see. They are resolved on the host, before init starts: `*` patterns are
//! expanded and every match canonicalized, because the container's root is an overlay of the host's `/` and a
//! mount over a path with a symlink in it would land wherever the symlink points instead.

use super::protocol::Mask;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// Secrets of the host that every container hides (docs/container.md), whatever their mode when the last walk for
/// private files (`private_files`) ran; the runtime adds its state dirs and the configured masks.
pub(crate) const DEFAULT_MASKS: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssh/ssh_host_*_key*",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/run",
];

/// Home directories, replaced by an empty writable dir (of the same mode, in memory) so `HOME` stays usable: what
/// people keep there (keys, tokens, shell history) is theirs, not a job's. `host_paths` bring back parts.
pub(crate) const HOMES: &[&str] = &["/root", "/home"];

/// Expands and canonicalizes `patterns`; paths that do not exist are skipped, and `/` is never masked.
pub(crate) fn resolve(patterns: impl IntoIterator<Item = PathBuf>) -> Vec<Mask> {
    let mut masks = BTreeSet::new();
    for pattern in patterns {
        if !pattern.is_absolute() {
            tracing::warn!(path = %pattern.display(), "ignoring a relative masked path");
            continue;
        }
        for path in expand(&pattern) {
            let Ok(real) = path.canonicalize() else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(&real) else {
                continue;
            };
            if real != Path::new("/") {
                masks.insert(Mask {
                    path: real,
                    dir: meta.is_dir(),
                    writable: false,
                });
            }
        }
    }
    masks.into_iter().collect()
}

/// Expands `*` (any run of characters within one component) against the file system.
fn expand(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for component in pattern.components() {
        let Component::Normal(part) = component else {
            if component == Component::ParentDir {
                found = found.into_iter().map(|p| p.join("..")).collect();
            }
            continue;
        };
        let part = part.to_string_lossy();
        if !part.contains('*') {
            found = found.into_iter().map(|p| p.join(&*part)).collect();
            continue;
        }
        let mut next = Vec::new();
        for dir in found {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            next.extend(
                names
                    .into_iter()
                    .filter(|name| matches(&part, name))
                    .map(|name| dir.join(name)),
            );
        }
        found = next;
    }
    found
}

/// Glob matching with `*` only.
fn matches(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    for (i, piece) in pieces.iter().enumerate() {
        if i == pieces.len() - 1 {
            return rest.len() >= piece.len() && rest.ends_with(piece);
        }
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_within_one_component() {
        assert!(matches("ssh_host_*_key*", "ssh_host_rsa_key"));
        assert!(matches("ssh_host_*_key*", "ssh_host_ed25519_key.pub"));
        assert!(!matches("ssh_host_*_key*", "ssh_config"));
        assert!(matches("*", ".hidden"));
        assert!(matches("a*a", "aa"));
        assert!(!matches("a*a", "a"));
        assert!(matches("plain", "plain") && !matches("plain", "plainer"));
    }

    #[test]
    fn patterns_expand_to_existing_canonical_paths_only() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().canonicalize().unwrap();
        for user in ["alice", "bob", "carol"] {
            std::fs::create_dir_all(base.join("home").join(user)).unwrap();
        }
        std::fs::create_dir(base.join("home/alice/.ssh")).unwrap();
        std::fs::write(base.join("home/bob/.ssh"), "not a dir").unwrap();
        std::os::unix::fs::symlink(base.join("home/alice"), base.join("link")).unwrap();
        let masks = resolve([
            base.join("home/*/.ssh"),
            base.join("link/.ssh"),
            base.join("missing"),
            PathBuf::from("relative"),
            PathBuf::from("/"),
        ]);
        assert_eq!(
            masks,
            vec![
                Mask {
                    path: base.join("home/alice/.ssh"),
                    dir: true,
                    writable: false,
                },
                Mask {
                    path: base.join("home/bob/.ssh"),
                    dir: false,
                    writable: false,
                },
            ]
        );
    }
}
