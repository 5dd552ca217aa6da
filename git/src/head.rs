//! A working tree's `HEAD`, for `gantry run`: read with libgit2, so no `git` is needed and no hook or
//! configuration-driven command of the tree's runs.

use super::GitError;
use std::path::Path;

/// What a working tree's repository says of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// The directory name of the repository's working tree.
    pub name: Option<String>,
    /// `HEAD`'s commit; empty before the first commit.
    pub commit: String,
    /// The branch `HEAD` is on (`refs/heads/…`, also before its first commit); empty when detached.
    pub git_ref: String,
}

/// The `HEAD` of the repository `dir` belongs to; `None` when it belongs to none.
pub fn head(dir: &Path) -> Result<Option<Head>, GitError> {
    let repo = match git2::Repository::discover(dir) {
        Ok(repo) => repo,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let name = repo
        .workdir()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
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
    Ok(Some(Head {
        name,
        commit,
        git_ref,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_has_no_head_and_a_repository_its_branch_and_commit() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(head(dir.path()).unwrap(), None);
        let tree = dir.path().join("app");
        let repo = git2::Repository::init(&tree).unwrap();
        repo.set_head("refs/heads/trunk").unwrap();
        let unborn = head(&tree).unwrap().unwrap();
        assert_eq!(
            (unborn.commit.as_str(), unborn.git_ref.as_str()),
            ("", "refs/heads/trunk")
        );
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree_id = repo.index().unwrap().write_tree().unwrap();
        let empty = repo.find_tree(tree_id).unwrap();
        let commit = repo
            .commit(Some("HEAD"), &sig, &sig, "first", &empty, &[])
            .unwrap();
        std::fs::create_dir(tree.join("sub")).unwrap();
        let from_sub = head(&tree.join("sub")).unwrap().unwrap();
        assert_eq!(from_sub.name.as_deref(), Some("app"));
        assert_eq!(from_sub.commit, commit.to_string());
        assert_eq!(from_sub.git_ref, "refs/heads/trunk");
    }
}
