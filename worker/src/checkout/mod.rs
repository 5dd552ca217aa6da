//! Source checkout: a bare mirror per repository in the worker's cache (`gantry_git`), fetched only when the
//! commit is missing, with the clone credential its lease carries, and the exact commit's tree written into a
//! fresh workspace directory.

use gantry_git::{GitError, Mirrors, Source};
use gantry_model::secret::CloneCredential;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The worker's mirror cache.
#[derive(Clone)]
pub struct MirrorCache {
    mirrors: Mirrors,
}

impl MirrorCache {
    /// A cache under `root`, whose fetches give up after `fetch_timeout`.
    pub fn new(root: PathBuf, fetch_timeout: Duration) -> Self {
        Self {
            mirrors: Mirrors::new(root, fetch_timeout),
        }
    }

    /// Writes the tree of `commit` (pushed to `git_ref`) of `repo` (cloned from `url`, with `credential` when
    /// the server asks for one) into `dest`, which must not exist. Blocking.
    pub fn checkout(
        &self,
        repo: &str,
        url: &str,
        commit: &str,
        git_ref: &str,
        credential: Option<&CloneCredential>,
        dest: &Path,
    ) -> Result<(), GitError> {
        let source = Source {
            url,
            commit,
            git_ref,
            credential,
            without_credential: "the lease carries no clone token",
        };
        self.mirrors
            .with_commit(repo, &source, |at| at.write_tree(dest))
    }
}
