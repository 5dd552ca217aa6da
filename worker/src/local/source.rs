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
        let repo = match git2::Repository::discover(dir) {
            Ok(repo) => repo,
            Err(e) => {
                if e.code() != git2::ErrorCode::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot read the git repository; GANTRY_COMMIT stays empty");
                }
                return TreeSource {
                    repo: own_name(),
                    ..TreeSource::default()
                };
            }
        };
        let name = repo
            .workdir()
            .and_then(Path::file_name)
            .map_or_else(own_name, |n| n.to_string_lossy().into_owned());
        let commit = repo
            .head()
            .and_then(|head| head.peel_to_commit())
            .map(|c| c.id().to_string())
            .unwrap_or_default();
        // Read as a symbolic ref, so that a branch with no commit yet still names itself.
        let git_ref = repo
            .find_reference("HEAD")
            .ok()
            .and_then(|head| head.symbolic_target().ok().flatten().map(str::to_owned))
            .unwrap_or_default();
        TreeSource {
            repo: name,
            commit,
            git_ref,
        }
    }

    /// `CI`, `GANTRY_*` for `job`, as the server gives them, with event `local` and pipeline 0.
    pub fn env(&self, job: &str) -> Vec<(String, String)> {
        builtin_env(&self.repo, &self.commit, &self.git_ref, EVENT, 0, job, None)
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
        let repo = git2::Repository::init(&tree).unwrap();
        repo.set_head("refs/heads/trunk").unwrap();
        assert_eq!(TreeSource::read(&tree).git_ref, "refs/heads/trunk");
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree_id = repo.index().unwrap().write_tree().unwrap();
        let empty = repo.find_tree(tree_id).unwrap();
        let commit = repo
            .commit(Some("HEAD"), &sig, &sig, "first", &empty, &[])
            .unwrap();
        std::fs::create_dir(tree.join("sub")).unwrap();
        let source = TreeSource::read(&tree.join("sub"));
        assert_eq!(source.repo, "app");
        assert_eq!(source.commit, commit.to_string());
        assert!(
            source
                .env("x")
                .contains(&("GANTRY_BRANCH".into(), "trunk".into()))
        );
    }
}
