//! One fetch into a mirror, on a thread of its own so that the caller can stop waiting for it. libgit2 has no
//! deadline of its own (and setting its socket timeouts is a process-wide, unsynchronised global), so a remote
//! that accepts and then says nothing would hold the fetch, and with it the repository, for good. After the
//! timeout the caller gets [`GitError::TimedOut`] and the repository is free; the thread left behind stops at
//! the first sign of life from the remote (every progress callback asks whether it was abandoned), so it never
//! writes into a mirror someone else is fetching into.

use super::{GitError, Source, shown};
use gantry_model::redact::redact_in;
use gantry_model::secret::CloneCredential;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// Fetches `source` into the bare repository at `dir`, giving up after `timeout`.
pub(crate) fn fetch(dir: &Path, source: &Source<'_>, timeout: Duration) -> Result<(), GitError> {
    let abandoned = Arc::new(AtomicBool::new(false));
    let (done, finished) = mpsc::channel();
    let request = Request {
        dir: dir.to_owned(),
        url: source.url.to_owned(),
        refspecs: match source.depth {
            super::Depth::Everything => refspecs(source.git_ref),
            super::Depth::Ref(_) => vec![format!("+{0}:{0}", source.git_ref)],
        },
        depth: match source.depth {
            super::Depth::Everything => 0,
            // libgit2's "unshallow": a plain 0 would leave a shallow mirror shallow.
            super::Depth::Ref(0) => i32::MAX,
            super::Depth::Ref(n) => i32::try_from(n).unwrap_or(i32::MAX),
        },
        headers: source.headers.to_vec(),
        credential: source.credential.cloned(),
        without_credential: source.without_credential.to_owned(),
        abandoned: abandoned.clone(),
    };
    std::thread::Builder::new()
        .name("gantry-git-fetch".into())
        .spawn(move || {
            let _ = done.send(request.run());
        })
        .map_err(|e| GitError::Fetch {
            url: shown(source.url),
            message: format!("cannot start the fetch: {e}"),
        })?;
    match finished.recv_timeout(timeout) {
        Ok(result) => result.map_err(|e| GitError::Fetch {
            url: shown(source.url),
            message: redact_in(e.message(), source.url),
        }),
        Err(RecvTimeoutError::Timeout) => {
            abandoned.store(true, Ordering::SeqCst);
            tracing::warn!(url = %shown(source.url), seconds = timeout.as_secs(), "a fetch timed out; abandoned");
            Err(GitError::TimedOut {
                url: shown(source.url),
                after: timeout,
            })
        }
        Err(RecvTimeoutError::Disconnected) => Err(GitError::Fetch {
            url: shown(source.url),
            message: "the fetch's thread ended without an answer".into(),
        }),
    }
}

/// What a mirror fetches to find a pipeline's commit: every branch and tag (so later pushes need small fetches),
/// and the pipeline's own ref when it is neither — a pull request's head (`refs/pull/7/head`), which may live
/// only there when it comes from a fork.
pub(crate) fn refspecs(git_ref: &str) -> Vec<String> {
    let mut specs = vec![
        "+refs/heads/*:refs/heads/*".to_owned(),
        "+refs/tags/*:refs/tags/*".to_owned(),
    ];
    if git_ref.starts_with("refs/")
        && !git_ref.starts_with("refs/heads/")
        && !git_ref.starts_with("refs/tags/")
    {
        specs.push(format!("+{git_ref}:{git_ref}"));
    }
    specs
}

/// What the fetch's thread needs, owned.
struct Request {
    dir: std::path::PathBuf,
    url: String,
    refspecs: Vec<String>,
    credential: Option<CloneCredential>,
    without_credential: String,
    abandoned: Arc<AtomicBool>,
    /// 0: no limit.
    depth: i32,
    headers: Vec<String>,
}

impl Request {
    fn run(self) -> Result<(), git2::Error> {
        let repo = git2::Repository::open_bare(&self.dir)?;
        let mut remote = repo.remote_anonymous(&self.url)?;
        let mut callbacks = git2::RemoteCallbacks::new();
        let mut asked = false;
        let (credential, without) = (&self.credential, &self.without_credential);
        // Answered once: libgit2 would ask again and again for credentials the server refuses.
        callbacks.credentials(move |_url, _user, allowed| match credential {
            Some(c) if !asked && allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) => {
                asked = true;
                git2::Cred::userpass_plaintext(&c.username, &c.password)
            }
            Some(_) => Err(git2::Error::from_str(
                "the repository's clone token was refused",
            )),
            None => Err(git2::Error::from_str(&format!(
                "the repository asks for credentials and {without}"
            ))),
        });
        let abandoned = &self.abandoned;
        callbacks.transfer_progress(|_| !abandoned.load(Ordering::SeqCst));
        callbacks.sideband_progress(|_| !abandoned.load(Ordering::SeqCst));
        let mut options = git2::FetchOptions::new();
        options.remote_callbacks(callbacks);
        // libgit2's local transport cannot fetch shallow; a local fetch is a copy of files anyway.
        let local = !self.url.contains("://") || self.url.starts_with("file://");
        if self.depth > 0 && !local {
            options.depth(self.depth);
        }
        let headers: Vec<&str> = self.headers.iter().map(String::as_str).collect();
        options.custom_headers(&headers);
        remote.fetch(&self.refspecs, Some(&mut options), None)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn branches_and_tags_are_fetched_and_a_pull_request_s_own_ref_too() {
        let branch = super::refspecs("refs/heads/main");
        assert_eq!(
            branch,
            ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
        );
        let pull = super::refspecs("refs/pull/7/head");
        assert_eq!(pull.last().unwrap(), "+refs/pull/7/head:refs/pull/7/head");
        assert_eq!(super::refspecs("refs/tags/v1").len(), 2);
    }
}
