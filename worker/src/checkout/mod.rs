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
        let origin = Upstream {
            repo: &source.repo,
            clone_url: &source.clone_url,
            credential: source.credential.as_ref(),
        };
        self.submodules(&origin, &submodules, dest, 1)
    }

    /// Checks out each submodule (and theirs, up to [`MAX_NESTING`]) from its own URL into `dest`.
    fn submodules(
        &self,
        origin: &Upstream<'_>,
        submodules: &[Submodule],
        dest: &Path,
        nesting: u32,
    ) -> Result<(), GitError> {
        for sub in submodules {
            // A pushed `.gitmodules` is the pusher's say: only http(s) (never a path or file:// of the
            // worker's host), and the repository's token only for its own forge.
            let (credential, refused) = origin.credential_for(&sub.url);
            if let Some(reason) = refused {
                return Err(GitError::Fetch {
                    url: sub.url.clone(),
                    message: format!("submodule {:?}: {reason}", sub.path),
                });
            }
            let repo = origin.repo;
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
            self.submodules(origin, &nested, &path, nesting + 1)?;
        }
        Ok(())
    }
}

/// The repository whose submodules are checked out: its name, its forge, its clone credential.
struct Upstream<'a> {
    repo: &'a str,
    clone_url: &'a str,
    credential: Option<&'a CloneCredential>,
}

impl Upstream<'_> {
    /// The credential a submodule at `url` may be fetched with (the repository's, only on its own forge:
    /// same scheme, host and port), or why it is not fetched at all.
    fn credential_for(&self, url: &str) -> (Option<&CloneCredential>, Option<String>) {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return (None, Some(format!("{url:?} is not a URL")));
        };
        if !matches!(parsed.scheme(), "http" | "https") {
            return (
                None,
                Some(format!(
                    "only http and https submodules are fetched, not {:?}",
                    parsed.scheme()
                )),
            );
        }
        let origin = |u: &reqwest::Url| {
            (
                u.scheme().to_owned(),
                u.host_str().map(str::to_owned),
                u.port_or_known_default(),
            )
        };
        let same_forge =
            reqwest::Url::parse(self.clone_url).is_ok_and(|own| origin(&own) == origin(&parsed));
        (self.credential.filter(|_| same_forge), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_only_to_the_repositorys_own_forge_and_only_over_http() {
        let token = CloneCredential {
            username: "ci".into(),
            password: "secret".into(),
        };
        let up = Upstream {
            repo: "app",
            clone_url: "https://forge.example/org/app.git",
            credential: Some(&token),
        };
        assert!(
            up.credential_for("https://forge.example/org/lib.git")
                .0
                .is_some()
        );
        assert!(
            up.credential_for("https://forge.example:443/x.git")
                .0
                .is_some()
        );
        let (elsewhere, refused) = up.credential_for("https://evil.example/x.git");
        assert!(
            elsewhere.is_none() && refused.is_none(),
            "fetched, without the token"
        );
        assert!(
            up.credential_for("http://forge.example/org/lib.git")
                .0
                .is_none()
        );
        assert!(
            up.credential_for("https://forge.example:8443/x.git")
                .0
                .is_none()
        );
        for local in [
            "/srv/git/other.git",
            "file:///srv/git/other.git",
            "ssh://forge.example/x",
        ] {
            assert!(up.credential_for(local).1.is_some(), "{local}");
        }
    }
}
