//! A workspace with history (`checkout: { depth: N }`): a repository of its own at the workspace, fetched
//! `depth` commits deep and checked out at the commit, detached. Fetched from the same place as the mirror
//! (a worker: the server's mirror), never with the job's credentials written into it.

use super::{Commit, Depth, GitError, Source, Submodule, fetch};
use std::path::Path;
use std::time::Duration;

/// Makes `dest` (created if missing) a repository holding `depth` commits of `source` (0: all of them), with
/// the commit checked out and `HEAD` detached at it; returns the commit's submodules when `submodules_of` gives
/// the URL relative ones are resolved against. Blocking.
pub fn checkout_with_history(
    dest: &Path,
    source: &Source<'_>,
    depth: u32,
    timeout: Duration,
    submodules_of: Option<&str>,
) -> Result<Vec<Submodule>, GitError> {
    std::fs::create_dir_all(dest).map_err(|e| GitError::Workspace(dest.to_owned(), e))?;
    let repo = git2::Repository::init(dest)?;
    let deep = Source {
        depth: Depth::Ref(depth),
        ..*source
    };
    fetch::fetch(repo.path(), &deep, timeout)?;
    let oid = git2::Oid::from_str(source.commit)
        .map_err(|_| GitError::NoCommit(source.commit.to_owned()))?;
    let commit = repo
        .find_commit(oid)
        .map_err(|_| GitError::NoCommit(source.commit.to_owned()))?;
    repo.set_head_detached(oid)?;
    let mut options = git2::build::CheckoutBuilder::new();
    options.force();
    repo.checkout_tree(commit.as_object(), Some(&mut options))?;
    // A branch of the pushed name where one was pushed, as a CI checkout is expected to have.
    if let Some(branch) = source.git_ref.strip_prefix("refs/heads/") {
        repo.branch(branch, &commit, true)?;
    }
    drop(commit);
    match submodules_of {
        Some(base) => Commit { repo, oid }.submodules(base),
        None => Ok(Vec::new()),
    }
}
