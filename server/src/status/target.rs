//! Where a repository's commit statuses go: its forge, the forge's API base URL and the repository's path
//! there, set on the repository or derived from its clone URL.

use super::StatusError;

/// A forge with a commit status API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forge {
    /// GitHub or GitHub Enterprise Server.
    GitHub,
    /// GitLab.
    GitLab,
    /// Gitea or Forgejo.
    Gitea,
}

impl Forge {
    /// The forge of a repository's `forge` column; none for `git`, which has no status API.
    pub fn parse(kind: &str) -> Option<Forge> {
        match kind {
            "github" => Some(Forge::GitHub),
            "gitlab" => Some(Forge::GitLab),
            "gitea" => Some(Forge::Gitea),
            _ => None,
        }
    }
}

/// The API base URL (no trailing slash) and the repository's `owner/name` there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// E.g. `https://api.github.com`, `https://gitlab.example.com/api/v4`.
    pub api: String,
    /// E.g. `owner/name`; on GitLab the project's full path (`group/subgroup/name`).
    pub full_name: String,
}

/// The target of a repository: `api` and `full_name` when set, else derived from `clone_url`.
pub fn target(
    forge: Forge,
    clone_url: &str,
    full_name: Option<&str>,
    api: Option<&str>,
) -> Result<Target, StatusError> {
    let parsed = split_clone_url(clone_url);
    let full_name = match full_name {
        Some(name) => name.trim_matches('/').to_owned(),
        None => parsed
            .as_ref()
            .map(|p| p.path.clone())
            .filter(|path| path.contains('/'))
            .ok_or_else(|| {
                StatusError::NoTarget(format!(
                    "no owner/name in the clone URL {clone_url:?}: set the forge full name"
                ))
            })?,
    };
    let api = match api {
        Some(api) => api.trim_end_matches('/').to_owned(),
        None => {
            let p = parsed.ok_or_else(|| {
                StatusError::NoTarget(format!(
                    "no host in the clone URL {clone_url:?}: set the forge API URL"
                ))
            })?;
            match forge {
                // https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api
                // (GitHub Enterprise Server serves the same API under /api/v3).
                Forge::GitHub if p.host == "github.com" => "https://api.github.com".to_owned(),
                Forge::GitHub => format!("{}://{}/api/v3", p.scheme, p.host),
                Forge::GitLab => format!("{}://{}/api/v4", p.scheme, p.host),
                Forge::Gitea => format!("{}://{}/api/v1", p.scheme, p.host),
            }
        }
    };
    Ok(Target { api, full_name })
}

/// The parts of a clone URL that locate its forge.
struct CloneUrl {
    /// `http` for a plain-HTTP clone URL, else `https`.
    scheme: &'static str,
    /// The host, with its port for HTTP(S) URLs (an SSH port is not the web's).
    host: String,
    /// The repository's path, without slashes around it or `.git`.
    path: String,
}

fn split_clone_url(url: &str) -> Option<CloneUrl> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        // scp-like `git@host:owner/name.git`
        None => {
            let (host, path) = url.split_once(':')?;
            if host.contains('/') {
                return None; // a local path
            }
            return Some(CloneUrl {
                scheme: "https",
                host: host.rsplit('@').next()?.to_owned(),
                path: repo_path(path),
            });
        }
    };
    let (authority, path) = rest.split_once('/')?;
    let host = authority.rsplit('@').next()?;
    let web = matches!(scheme, "http" | "https");
    let host = if web { host } else { host.split(':').next()? };
    Some(CloneUrl {
        scheme: if scheme == "http" { "http" } else { "https" },
        host: host.to_owned(),
        path: repo_path(path),
    })
}

fn repo_path(path: &str) -> String {
    let path = path.trim_matches('/');
    path.strip_suffix(".git").unwrap_or(path).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derived(forge: Forge, url: &str) -> (String, String) {
        let t = target(forge, url, None, None).unwrap();
        (t.api, t.full_name)
    }

    #[test]
    fn the_api_and_the_full_name_follow_from_the_clone_url() {
        assert_eq!(
            derived(Forge::GitHub, "https://github.com/owner/name.git"),
            ("https://api.github.com".into(), "owner/name".into())
        );
        assert_eq!(
            derived(Forge::GitHub, "git@github.com:owner/name.git"),
            ("https://api.github.com".into(), "owner/name".into())
        );
        assert_eq!(
            derived(Forge::GitHub, "https://ghe.example.com/owner/name"),
            ("https://ghe.example.com/api/v3".into(), "owner/name".into())
        );
        assert_eq!(
            derived(
                Forge::GitLab,
                "ssh://git@gitlab.example.com:2222/group/sub/name.git"
            ),
            (
                "https://gitlab.example.com/api/v4".into(),
                "group/sub/name".into()
            )
        );
        assert_eq!(
            derived(Forge::Gitea, "http://gitea.local:3000/owner/name.git"),
            ("http://gitea.local:3000/api/v1".into(), "owner/name".into())
        );
    }

    #[test]
    fn what_the_repository_sets_wins_and_a_local_path_needs_both() {
        let set = target(
            Forge::Gitea,
            "/srv/x.git",
            Some("o/n"),
            Some("http://127.0.0.1:1/api/v1/"),
        )
        .unwrap();
        assert_eq!(
            set,
            Target {
                api: "http://127.0.0.1:1/api/v1".into(),
                full_name: "o/n".into()
            }
        );
        assert!(target(Forge::Gitea, "/srv/x.git", Some("o/n"), None).is_err());
        assert!(target(Forge::Gitea, "/srv/x.git", None, Some("http://h/api/v1")).is_err());
    }
}
