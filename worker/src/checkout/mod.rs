//! Source checkout (git2): a bare mirror per repository in the worker's cache, fetched only when the commit is
//! missing, and the exact commit's tree written into a fresh workspace directory. A private repository is
//! fetched with the clone credential its lease carries (HTTP basic through git2's credential callback, so it
//! is never in a URL, a log line or an error).

use gantry_model::redact::{redact_in, redact_url};
use gantry_model::secret::CloneCredential;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// Fetching from the clone URL failed.
    #[error("fetching {url} failed: {message}")]
    Fetch {
        /// The clone URL, credentials redacted.
        url: String,
        /// git's error, credentials redacted.
        message: String,
    },
    /// The commit is not in the repository even after a fetch.
    #[error("commit {0} is not in the repository")]
    NoCommit(String),
    /// git failed otherwise.
    #[error("checkout failed: {0}")]
    Git(#[from] git2::Error),
    /// The workspace could not be made.
    #[error("cannot create the workspace {0}: {1}")]
    Workspace(PathBuf, std::io::Error),
}

/// The worker's mirror cache; checkouts of one repository are serialised (they share its mirror).
#[derive(Clone)]
pub struct MirrorCache {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
}

impl MirrorCache {
    /// A cache under `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            locks: Arc::default(),
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
    ) -> Result<(), CheckoutError> {
        let lock = self
            .locks
            .lock()
            .expect("lock poisoned")
            .entry(repo.to_owned())
            .or_default()
            .clone();
        let _guard = lock.lock().expect("lock poisoned");
        let mirror = self.root.join(format!("{repo}.git"));
        let git = match git2::Repository::open_bare(&mirror) {
            Ok(git) => git,
            Err(_) => git2::Repository::init_bare(&mirror)?,
        };
        let oid =
            git2::Oid::from_str(commit).map_err(|_| CheckoutError::NoCommit(commit.to_owned()))?;
        if git.find_commit(oid).is_err() {
            let fetch_err = |e: git2::Error| CheckoutError::Fetch {
                url: redact_url(url),
                message: redact_in(e.message(), url),
            };
            let mut remote = git.remote_anonymous(url).map_err(fetch_err)?;
            let refspecs = gantry_model::wire::fetch_refspecs(git_ref);
            let mut options = fetch_options(credential);
            remote
                .fetch(&refspecs, Some(&mut options), None)
                .map_err(fetch_err)?;
        }
        let tree = git
            .find_commit(oid)
            .map_err(|_| CheckoutError::NoCommit(commit.to_owned()))?
            .tree()?;
        std::fs::create_dir_all(dest).map_err(|e| CheckoutError::Workspace(dest.to_owned(), e))?;
        let mut options = git2::build::CheckoutBuilder::new();
        options.target_dir(dest).force().recreate_missing(true);
        git.checkout_tree(tree.as_object(), Some(&mut options))?;
        Ok(())
    }
}

/// Fetch options that answer an HTTP server's request for credentials once with `credential`, and otherwise
/// fail saying why (libgit2 would ask again and again).
fn fetch_options(credential: Option<&CloneCredential>) -> git2::FetchOptions<'_> {
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
            "the repository asks for credentials and the lease carries no clone token",
        )),
    });
    let mut options = git2::FetchOptions::new();
    options.remote_callbacks(callbacks);
    options
}
