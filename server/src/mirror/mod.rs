//! The server's bare mirrors of repositories (`gantry_git`): fetch a pushed commit (every branch and tag, whole:
//! libgit2 serves a shallow mirror badly to its own fetches, "invalid packet line"), read `.gantry.yml` at it,
//! and pin it (`refs/gantry/commits/…`) for the workers, which fetch it from here (`smart_http`) rather than
//! from the forge: one fetch from the forge per push, however many jobs and workers. A private repository is
//! fetched with its clone token, opened from the vault for the fetch.

pub mod smart_http;

use crate::secrets::Vault;
use gantry_git::{Depth, GitError, Source};
use gantry_model::pipeline::MAX_FILE_BYTES;
use std::path::PathBuf;
use std::time::Duration;

/// Why a file could not be read at a commit.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// git failed: fetching, timing out, a missing commit, a file too big.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The blocking task died.
    #[error("the mirror task failed: {0}")]
    Task(String),
    /// The repository's clone token could not be read.
    #[error("reading the repository's clone token failed: {0}")]
    Credential(String),
}

/// The server's mirrors, one per repository, with the clone tokens of the repositories that have one.
#[derive(Clone)]
pub struct Mirrors {
    mirrors: gantry_git::Mirrors,
    vault: Option<Vault>,
}

impl Mirrors {
    /// Mirrors kept under `root`, whose fetches give up after `fetch_timeout`.
    pub fn new(root: PathBuf, fetch_timeout: Duration) -> Self {
        Self {
            mirrors: gantry_git::Mirrors::new(root, fetch_timeout),
            vault: None,
        }
    }

    /// Fetches private repositories with the clone tokens `vault` holds.
    pub fn with_credentials(self, vault: Vault) -> Self {
        Self {
            vault: Some(vault),
            ..self
        }
    }

    /// Where the mirrors are (one `NAME.git` each).
    pub fn root(&self) -> &std::path::Path {
        self.mirrors.root()
    }

    /// Fetches `commit` (pushed to `git_ref`) of `url` into the mirror of `repo` if it is not there yet, pins
    /// it for the workers, then reads `path` at it: `Ok(None)` when the commit has no such file; one bigger than
    /// a pipeline file may be is refused unread.
    pub async fn read_file_at(
        &self,
        repo: &str,
        url: &str,
        commit: &str,
        git_ref: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, MirrorError> {
        let credential = match &self.vault {
            Some(vault) => vault
                .clone_credential(repo)
                .await
                .map_err(|e| MirrorError::Credential(e.to_string()))?,
            None => None,
        };
        let mirrors = self.mirrors.clone();
        let (repo, url, commit, git_ref, path) = (
            repo.to_owned(),
            url.to_owned(),
            commit.to_owned(),
            git_ref.to_owned(),
            path.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            let source = Source {
                url: &url,
                commit: &commit,
                git_ref: &git_ref,
                credential: credential.as_ref(),
                without_credential: WITHOUT_CREDENTIAL,
                headers: &[],
                depth: Depth::Everything,
            };
            mirrors.with_commit(&repo, &source, |at| {
                at.pin()?;
                at.read_file(&path, MAX_FILE_BYTES)
            })
        })
        .await
        .map_err(|e| MirrorError::Task(e.to_string()))?
        .map_err(MirrorError::from)
    }
}

/// What a private repository's fetch without a clone token tells the user.
const WITHOUT_CREDENTIAL: &str =
    "has no clone token (set one with `gantry repo set NAME --clone-token-file FILE`)";
