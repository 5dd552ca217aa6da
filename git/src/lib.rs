//! Gantry's one use of git (libgit2 through git2), for the server and the worker alike: a bare mirror per
//! repository under a directory, one fetch or read of a repository at a time, fetches that answer an HTTP
//! server's request for credentials once (never in a URL, a log line or an error) and give up after a timeout,
//! and what is read at a commit: a file (its size checked from the object's header first) or its whole tree,
//! written into a workspace. [`head`] reads a working tree's `HEAD` for `gantry run`.

mod fetch;
mod head;
mod history;
mod submodules;

pub use head::{Head, head};
pub use history::checkout_with_history;
pub use submodules::Submodule;

use gantry_model::redact::redact_url;
use gantry_model::secret::CloneCredential;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a fetch may take when the configuration says nothing (`git_fetch_timeout`).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What can go wrong with git.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// Fetching from the clone URL failed.
    #[error("could not fetch {url}: {message}")]
    Fetch {
        /// The clone URL, credentials redacted.
        url: String,
        /// git's error, credentials redacted.
        message: String,
    },
    /// The remote did not finish within the fetch timeout; the repository is free again for the next fetch.
    #[error("could not fetch {url}: it took longer than {} s (git_fetch_timeout)", after.as_secs())]
    TimedOut {
        /// The clone URL, credentials redacted.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// The commit is not in the repository, even after a fetch.
    #[error("commit {0} is not in the repository")]
    NoCommit(String),
    /// A file is larger than the caller takes; it was not read.
    #[error("{path} is {size} bytes, more than the {max} it may have")]
    TooLarge {
        /// The file's path in the commit.
        path: String,
        /// Its size, from the object's header.
        size: usize,
        /// The most the caller takes.
        max: usize,
    },
    /// The workspace could not be made.
    #[error("cannot create the workspace {0}: {1}")]
    Workspace(PathBuf, std::io::Error),
    /// git failed reading or writing the mirror.
    #[error("git failed: {0}")]
    Git(#[from] git2::Error),
}

/// How much a fetch asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Every branch and tag (and the pushed ref), whole: later pushes need small fetches.
    Everything,
    /// Only the pushed ref, this many commits deep (0: its whole history). A shallow mirror fetches what it
    /// needs to read one commit in a fraction of the time of its history; when the commit is not where the ref
    /// points any more (pushed again since), everything is fetched after all.
    Ref(u32),
}

/// Where a commit comes from.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The clone URL.
    pub url: &'a str,
    /// The commit (40 hex digits).
    pub commit: &'a str,
    /// The ref it was pushed to, which says what to fetch.
    pub git_ref: &'a str,
    /// HTTP basic credentials, for a server that asks.
    pub credential: Option<&'a CloneCredential>,
    /// What to tell the user when the server asks for credentials and there are none (where to set them).
    pub without_credential: &'a str,
    /// HTTP headers sent with every request (a worker's token and lease, to the server's mirror).
    pub headers: &'a [String],
    /// How much to fetch.
    pub depth: Depth,
}

/// The ref a server's mirror keeps for each commit it read a pipeline at, so that workers fetch exactly that
/// commit (the branch may have moved on since).
pub fn commit_ref(commit: &str) -> String {
    gantry_model::wire::mirror_ref(commit)
}

/// Bare mirrors under one directory, one per repository; a repository is fetched or read by one caller at a
/// time (they share its mirror).
#[derive(Clone, Debug)]
pub struct Mirrors {
    root: PathBuf,
    fetch_timeout: Duration,
    locks: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
}

/// A commit in its repository's mirror, while the caller holds the repository.
pub struct Commit {
    repo: git2::Repository,
    oid: git2::Oid,
}

impl Mirrors {
    /// Mirrors kept under `root`, whose fetches give up after `fetch_timeout`.
    pub fn new(root: PathBuf, fetch_timeout: Duration) -> Self {
        Self {
            root,
            fetch_timeout,
            locks: Arc::default(),
        }
    }

    /// Where the mirrors are.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How long a fetch may take.
    pub fn fetch_timeout(&self) -> Duration {
        self.fetch_timeout
    }

    /// Runs `use_it` on `source`'s commit in the mirror of `repo`, fetched first when the mirror does not have
    /// it, holding the repository meanwhile. Blocking.
    pub fn with_commit<T>(
        &self,
        repo: &str,
        source: &Source<'_>,
        use_it: impl FnOnce(&Commit) -> Result<T, GitError>,
    ) -> Result<T, GitError> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(repo.to_owned())
            .or_default()
            .clone();
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.root.join(format!("{repo}.git"));
        let git = match git2::Repository::open_bare(&dir) {
            Ok(git) => git,
            Err(_) => git2::Repository::init_bare(&dir)?,
        };
        let no_commit = || GitError::NoCommit(source.commit.to_owned());
        let oid = git2::Oid::from_str(source.commit).map_err(|_| no_commit())?;
        if git.find_commit(oid).is_err() {
            fetch::fetch(&dir, source, self.fetch_timeout)?;
            if git.find_commit(oid).is_err() && source.depth != Depth::Everything {
                let everything = Source {
                    depth: Depth::Everything,
                    ..*source
                };
                fetch::fetch(&dir, &everything, self.fetch_timeout)?;
            }
            git.find_commit(oid).map_err(|_| no_commit())?;
        }
        use_it(&Commit { repo: git, oid })
    }
}

impl Commit {
    /// Points [`commit_ref`] at this commit, for workers to fetch.
    pub fn pin(&self) -> Result<(), GitError> {
        let name = commit_ref(&self.oid.to_string());
        if self.repo.refname_to_id(&name).ok() == Some(self.oid) {
            return Ok(());
        }
        let write = || {
            self.repo
                .reference(&name, self.oid, true, "gantry: a pipeline's commit")
        };
        if write().is_err() {
            // A lock file left by a process killed while writing this ref: this caller holds the mirror.
            let _ = std::fs::remove_file(self.repo.path().join(format!("{name}.lock")));
            write()?;
        }
        Ok(())
    }

    /// The file at `path`, or `None` when the commit has none; one over `max` bytes is refused unread.
    pub fn read_file(&self, path: &str, max: usize) -> Result<Option<Vec<u8>>, GitError> {
        let tree = self.repo.find_commit(self.oid)?.tree()?;
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Ok(None);
        };
        // The size from the object's header first: a blob of a gigabyte of one byte packs into a few
        // kilobytes, and reading it would inflate all of it.
        let (size, _) = self.repo.odb()?.read_header(entry.id())?;
        if size > max {
            return Err(GitError::TooLarge {
                path: path.to_owned(),
                size,
                max,
            });
        }
        let object = entry.to_object(&self.repo)?;
        Ok(object.as_blob().map(|b| b.content().to_vec()))
    }

    /// Writes the commit's tree into `dest` (created if missing).
    pub fn write_tree(&self, dest: &Path) -> Result<(), GitError> {
        let tree = self.repo.find_commit(self.oid)?.tree()?;
        std::fs::create_dir_all(dest).map_err(|e| GitError::Workspace(dest.to_owned(), e))?;
        // The workspace as the mirror's working tree for this handle only: libgit2 refuses to check out a tree
        // holding a submodule (a gitlink, made an empty dir) into a bare repository's `target_dir`.
        self.repo.set_workdir(dest, false)?;
        let mut options = git2::build::CheckoutBuilder::new();
        options.force().recreate_missing(true).update_index(false);
        self.repo
            .checkout_tree(tree.as_object(), Some(&mut options))?;
        Ok(())
    }
}

/// `url` fit for a message.
fn shown(url: &str) -> String {
    redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A bare repository with one commit holding `files`; its path and the commit.
    fn origin(dir: &Path, files: &[(&str, &[u8])]) -> (PathBuf, String) {
        let path = dir.join("origin.git");
        let repo = git2::Repository::init_bare(&path).unwrap();
        let mut builder = repo.treebuilder(None).unwrap();
        for (name, data) in files {
            let blob = repo.blob(data).unwrap();
            builder.insert(name, blob, 0o100644).unwrap();
        }
        let tree = repo.find_tree(builder.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let commit = repo
            .commit(Some("refs/heads/main"), &sig, &sig, "first", &tree, &[])
            .unwrap();
        (path, commit.to_string())
    }

    fn source<'a>(url: &'a str, commit: &'a str) -> Source<'a> {
        Source {
            url,
            commit,
            git_ref: "refs/heads/main",
            credential: None,
            without_credential: "none was given",
            headers: &[],
            depth: Depth::Everything,
        }
    }

    #[test]
    fn a_commit_is_fetched_once_then_read_and_written_out() {
        let dir = tempfile::tempdir().unwrap();
        let (url, commit) = origin(dir.path(), &[("a.txt", b"hello"), ("big", &[7; 100])]);
        let url = url.to_string_lossy().into_owned();
        let mirrors = Mirrors::new(dir.path().join("mirrors"), Duration::from_secs(30));
        let text = mirrors
            .with_commit("app", &source(&url, &commit), |at| {
                at.read_file("a.txt", 10)
            })
            .unwrap();
        assert_eq!(text.as_deref(), Some(&b"hello"[..]));
        // The origin gone: the mirror has the commit and does not fetch again.
        std::fs::remove_dir_all(&url).unwrap();
        let missing =
            mirrors.with_commit("app", &source(&url, &commit), |at| at.read_file("nope", 10));
        assert_eq!(missing.unwrap(), None);
        let big = mirrors.with_commit("app", &source(&url, &commit), |at| at.read_file("big", 10));
        assert!(
            matches!(big, Err(GitError::TooLarge { size: 100, .. })),
            "{big:?}"
        );
        let dest = dir.path().join("workspace");
        mirrors
            .with_commit("app", &source(&url, &commit), |at| at.write_tree(&dest))
            .unwrap();
        assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"hello");
    }

    #[test]
    fn a_remote_that_hangs_times_out_and_frees_the_repository() {
        // Accepts connections and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::thread::spawn(move || {
            let mut kept = Vec::new();
            for stream in listener.incoming().take(2) {
                kept.push(stream);
            }
            std::thread::sleep(Duration::from_secs(30));
        });
        let dir = tempfile::tempdir().unwrap();
        let mirrors = Mirrors::new(dir.path().join("mirrors"), Duration::from_secs(1));
        let url = format!("http://127.0.0.1:{port}/app.git");
        let commit = "1".repeat(40);
        let started = Instant::now();
        let hung = mirrors.with_commit("app", &source(&url, &commit), |_| Ok(()));
        assert!(matches!(hung, Err(GitError::TimedOut { .. })), "{hung:?}");
        let message = hung.unwrap_err().to_string();
        assert!(message.contains("git_fetch_timeout"), "{message}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        // The repository is free: the next fetch of it (from a remote that answers) goes ahead at once.
        let (origin, commit) = origin(dir.path(), &[("a.txt", b"after")]);
        let origin = origin.to_string_lossy().into_owned();
        let read = mirrors
            .with_commit("app", &source(&origin, &commit), |at| {
                at.read_file("a.txt", 10)
            })
            .unwrap();
        assert_eq!(read.as_deref(), Some(&b"after"[..]));
        drop(held);
    }
}
