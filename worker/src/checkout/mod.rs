//! Source checkout: a bare mirror per repository in the worker's cache (`gantry_git`), fed from the server's
//! mirror of the repository (the lease says where; the worker's token and the lease authorise it), fetched only
//! when the commit is missing and then only what is new, one commit deep; the commit's tree written into a
//! fresh workspace directory. A job that asks for history (`checkout: { depth }`) gets a repository of its
//! own in the workspace, fetched from the same place; one that asks for submodules gets them too, fetched from
//! their own URLs with the repository's clone credential and cached like the rest.

use gantry_git::{Depth, GitError, Mirrors, Source, Submodule};
use gantry_model::pipeline::Checkout;
use gantry_model::secret::CloneCredential;
use gantry_model::wire;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How deep submodules of submodules are followed.
const MAX_NESTING: u32 = 4;

/// The worker's mirror cache.
#[derive(Clone)]
pub struct MirrorCache {
    mirrors: Mirrors,
}

/// What a lease says about a job's source, and how to reach the server's mirror.
pub struct CheckoutRequest<'a> {
    /// The lease's source.
    pub source: &'a wire::Source,
    /// The server's URL (what the lease's mirror path is relative to).
    pub server: &'a str,
    /// HTTP headers for the server's mirror (the worker's token, the lease).
    pub headers: &'a [String],
    /// What the job asks for besides the files.
    pub checkout: Checkout,
}

/// Where one fetch goes: the URL, the ref that holds the commit there, and how to authenticate.
struct Origin<'a> {
    url: String,
    git_ref: String,
    credential: Option<&'a CloneCredential>,
    headers: &'a [String],
    depth: Depth,
}

impl MirrorCache {
    /// A cache under `root`, whose fetches give up after `fetch_timeout`.
    pub fn new(root: PathBuf, fetch_timeout: Duration) -> Self {
        Self {
            mirrors: Mirrors::new(root, fetch_timeout),
        }
    }

    /// Writes the job's source into `dest`, which must not exist: the commit's files (and `.git` with history
    /// when asked), and its submodules when asked. Blocking.
    pub fn checkout(&self, request: &CheckoutRequest<'_>, dest: &Path) -> Result<(), GitError> {
        let source = request.source;
        let origin = match &source.mirror {
            Some(path) => Origin {
                url: format!("{}{path}", request.server.trim_end_matches('/')),
                git_ref: wire::mirror_ref(&source.commit),
                credential: None,
                headers: request.headers,
                depth: Depth::Ref(1),
            },
            None => Origin {
                url: source.clone_url.clone(),
                git_ref: source.git_ref.clone(),
                credential: source.credential.as_ref(),
                headers: &[],
                depth: Depth::Everything,
            },
        };
        let from = Source {
            url: &origin.url,
            commit: &source.commit,
            git_ref: &origin.git_ref,
            credential: origin.credential,
            without_credential: "the lease carries no clone token",
            headers: origin.headers,
            depth: origin.depth,
        };
        let base_url = &source.clone_url;
        let submodules = match request.checkout.depth {
            None => self.mirrors.with_commit(&source.repo, &from, |at| {
                at.write_tree(dest)?;
                if request.checkout.submodules {
                    at.submodules(base_url)
                } else {
                    Ok(Vec::new())
                }
            })?,
            Some(depth) => {
                let wanted = request.checkout.submodules.then_some(base_url.as_str());
                gantry_git::checkout_with_history(
                    dest,
                    &from,
                    depth,
                    self.mirrors.fetch_timeout(),
                    wanted,
                )?
            }
        };
        self.submodules(
            &source.repo,
            &submodules,
            source.credential.as_ref(),
            dest,
            1,
        )
    }

    /// Checks out each submodule (and theirs, up to [`MAX_NESTING`]) from its own URL into `dest`.
    fn submodules(
        &self,
        repo: &str,
        submodules: &[Submodule],
        credential: Option<&CloneCredential>,
        dest: &Path,
        nesting: u32,
    ) -> Result<(), GitError> {
        for sub in submodules {
            let path = dest.join(&sub.path);
            // A hostile .gitmodules could name a path out of the workspace: only plain relative paths go.
            if Path::new(&sub.path)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(GitError::Fetch {
                    url: sub.url.clone(),
                    message: format!("submodule path {:?} leaves the workspace", sub.path),
                });
            }
            let name = format!(
                "{repo}.sub-{}",
                &hex::encode(Sha256::digest(&sub.url))[..16]
            );
            let from = Source {
                url: &sub.url,
                commit: &sub.commit,
                git_ref: "HEAD",
                credential,
                without_credential: "the lease carries no clone token for the repository's submodules",
                headers: &[],
                depth: Depth::Everything,
            };
            let nested = self.mirrors.with_commit(&name, &from, |at| {
                // The superproject's checkout made the gitlink an empty dir; the files go in it.
                at.write_tree(&path)?;
                if nesting < MAX_NESTING {
                    at.submodules(&sub.url)
                } else {
                    Ok(Vec::new())
                }
            })?;
            self.submodules(repo, &nested, credential, &path, nesting + 1)?;
        }
        Ok(())
    }
}
