//! The server's bare mirrors of repositories (git2): fetch a pushed commit, read `.gantry.yml` at that commit.
//! A private repository is fetched with its clone token (HTTP basic, through git2's credential callback: the
//! token never appears in a URL, a log line or an error).

use crate::secrets::Vault;
use gantry_model::pipeline::MAX_FILE_BYTES;
use gantry_model::redact::{redact_in, redact_url};
use gantry_model::secret::CloneCredential;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a file could not be read at a commit.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// git failed (fetch, open, lookup).
    #[error("could not fetch {url}: {message}")]
    Fetch {
        /// The clone URL, credentials redacted.
        url: String,
        /// git's error, credentials redacted.
        message: String,
    },
    /// The commit is not in the repository even after a fetch.
    #[error("commit {0} is not in the repository")]
    NoCommit(String),
    /// git failed reading the mirror.
    #[error("reading the mirror failed: {0}")]
    Git(#[from] git2::Error),
    /// The blocking task died.
    #[error("the mirror task failed: {0}")]
    Task(String),
    /// The repository's clone token could not be read.
    #[error("reading the repository's clone token failed: {0}")]
    Credential(String),
    /// The file is larger than the caller takes; it was not read.
    #[error("{path} is {size} bytes, more than the {max} a pipeline file may have")]
    TooLarge {
        /// The file's path in the commit.
        path: String,
        /// Its size, from the object's header.
        size: usize,
        /// The most the caller takes.
        max: usize,
    },
}

/// The bare mirrors under one directory, one per repository; fetches of one repository are serialised.
#[derive(Clone)]
pub struct Mirrors {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
    vault: Option<Vault>,
}

impl Mirrors {
    /// Mirrors kept under `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            locks: Arc::default(),
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

    /// Fetches `commit` (pushed to `git_ref`) of `url` into the mirror of `repo` if it is not there yet, then
    /// reads `path` at it: `Ok(None)` when the commit has no such file.
    pub async fn read_file_at(
        &self,
        repo: &str,
        url: &str,
        commit: &str,
        git_ref: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, MirrorError> {
        let lock = self
            .locks
            .lock()
            .expect("lock poisoned")
            .entry(repo.to_owned())
            .or_default()
            .clone();
        let dir = self.root.join(format!("{repo}.git"));
        let (url, commit, path) = (url.to_owned(), commit.to_owned(), path.to_owned());
        let refspecs = gantry_model::wire::fetch_refspecs(git_ref);
        let credential = match &self.vault {
            Some(vault) => vault
                .clone_credential(repo)
                .await
                .map_err(|e| MirrorError::Credential(e.to_string()))?,
            None => None,
        };
        tokio::task::spawn_blocking(move || {
            let _guard = lock.lock().expect("lock poisoned");
            read_blocking(&dir, &url, &commit, &refspecs, credential.as_ref(), &path)
        })
        .await
        .map_err(|e| MirrorError::Task(e.to_string()))?
    }
}

fn read_blocking(
    dir: &Path,
    url: &str,
    commit: &str,
    refspecs: &[String],
    credential: Option<&CloneCredential>,
    path: &str,
) -> Result<Option<Vec<u8>>, MirrorError> {
    let repo = match git2::Repository::open_bare(dir) {
        Ok(repo) => repo,
        Err(_) => git2::Repository::init_bare(dir)?,
    };
    let oid = git2::Oid::from_str(commit).map_err(|_| MirrorError::NoCommit(commit.to_owned()))?;
    if repo.find_commit(oid).is_err() {
        let fetch_err = |e: git2::Error| MirrorError::Fetch {
            url: redact_url(url),
            message: redact_in(e.message(), url),
        };
        let mut remote = repo.remote_anonymous(url).map_err(fetch_err)?;
        let mut options = fetch_options(credential);
        remote
            .fetch(refspecs, Some(&mut options), None)
            .map_err(fetch_err)?;
    }
    let commit_obj = repo
        .find_commit(oid)
        .map_err(|_| MirrorError::NoCommit(commit.to_owned()))?;
    let tree = commit_obj.tree()?;
    let Ok(entry) = tree.get_path(Path::new(path)) else {
        return Ok(None);
    };
    // The size from the object's header first: a blob of a gigabyte of one byte packs into a few kilobytes,
    // and reading it would inflate all of it.
    let (size, _) = repo.odb()?.read_header(entry.id())?;
    if size > MAX_FILE_BYTES {
        return Err(MirrorError::TooLarge {
            path: path.to_owned(),
            size,
            max: MAX_FILE_BYTES,
        });
    }
    let object = entry.to_object(&repo)?;
    Ok(object.as_blob().map(|b| b.content().to_vec()))
}

/// Fetch options that answer an HTTP server's request for credentials once with `credential`, and otherwise
/// fail with a message that says what to do (libgit2 would ask again and again).
pub fn fetch_options(credential: Option<&CloneCredential>) -> git2::FetchOptions<'_> {
    let mut callbacks = git2::RemoteCallbacks::new();
    let mut asked = false;
    callbacks.credentials(move |_url, _user, allowed| match credential {
        Some(c) if !asked && allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) => {
            asked = true;
            git2::Cred::userpass_plaintext(&c.username, &c.password)
        }
        Some(_) => Err(git2::Error::from_str(
            "the repository's clone token was refused",
        )),
        None => Err(git2::Error::from_str(
            "the repository asks for credentials and has no clone token (set one with `gantry repo set NAME --clone-token-file FILE`)",
        )),
    });
    let mut options = git2::FetchOptions::new();
    options.remote_callbacks(callbacks);
    options
}
