//! What Gantry's variables say about a working tree: `gantry run` has no push, so the repository, commit and
//! ref come from the git repository the tree belongs to, if any.

use gantry_model::wire::builtin_env;
use std::path::Path;

/// `GANTRY_EVENT` of a local run.
pub(crate) const EVENT: &str = "local";

/// The working tree as Gantry's variables describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TreeSource {
    /// The repository's directory name (the tree's own when it is not in a repository).
    pub repo: String,
    /// `HEAD`'s commit: what the tree was last committed as, not necessarily what it holds now (uncommitted
    /// changes run too). Empty outside a repository or before the first commit.
    pub commit: String,
    /// The branch `HEAD` is on (`refs/heads/…`); empty when detached or outside a repository.
    pub git_ref: String,
}

impl TreeSource {
    /// Reads `dir`'s repository with libgit2 (no `git` needed, and no hook or config-driven command of the
    /// tree's runs); a tree that is not a repository, or one libgit2 refuses (e.g. owned by another user
    /// without `safe.directory`), gets empty values.
    pub fn read(dir: &Path) -> TreeSource {
        let own_name = || {
            dir.file_name()
                .map_or("local".into(), |n| n.to_string_lossy().into_owned())
        };
        match gantry_git::head(dir) {
            Ok(Some(head)) => TreeSource {
                repo: head.name.unwrap_or_else(own_name),
                commit: head.commit,
                git_ref: head.git_ref,
            },
            Ok(None) => TreeSource {
                repo: own_name(),
                ..TreeSource::default()
            },
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the git repository; GANTRY_COMMIT stays empty");
                TreeSource {
                    repo: own_name(),
                    ..TreeSource::default()
                }
            }
        }
    }

    /// `CI`, `GANTRY_*` for `job`, as the server gives them, with event `local`, pipeline 0 and attempt 1.
    pub fn env(&self, job: &str) -> Vec<(String, String)> {
        let mut env = builtin_env(&self.repo, &self.commit, &self.git_ref, EVENT, 0, job, None);
        env.push(("GANTRY_ATTEMPT".to_owned(), "1".to_owned()));
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_named_after_itself_with_no_commit() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("proj");
        std::fs::create_dir(&tree).unwrap();
        let source = TreeSource::read(&tree);
        assert_eq!(source.repo, "proj");
        assert_eq!((source.commit.as_str(), source.git_ref.as_str()), ("", ""));
        let env = source.env("build");
        assert!(env.contains(&("GANTRY_EVENT".into(), "local".into())));
        assert!(env.contains(&("GANTRY_JOB".into(), "build".into())));
    }

    #[test]
    fn a_repository_gives_its_head_commit_and_branch() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("app");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args)
                .current_dir(&tree)
                .output()
                .expect("git (apt-get install git)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        git(&["init", "-q", "-b", "trunk"]);
        git(&["commit", "-q", "--allow-empty", "-m", "first"]);
        let commit = git(&["rev-parse", "HEAD"]);
        let source = TreeSource::read(&tree.join("sub"));
        assert_eq!(source.repo, "app");
        assert_eq!(source.commit, commit);
        assert!(
            source
                .env("x")
                .contains(&("GANTRY_BRANCH".into(), "trunk".into()))
        );
    }
}
