//! Adding a repository: what a request must hold and what Gantry derives from it (the forge's name for it,
//! a webhook secret). Knows no HTTP.

use crate::auth::generate_secret;
use crate::store::NewRepoRecord;
use gantry_model::RepoName;
use gantry_model::wire::NewRepo;

/// The forges with a webhook route (`/hooks/{forge}`; Forgejo uses Gitea's kind and also has its own route).
pub const FORGES: [&str; 4] = ["github", "gitlab", "gitea", "git"];

/// Why a repository cannot be added as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepoError {
    /// The name is not a valid repository name.
    #[error("{0}")]
    Name(String),
    /// The forge kind is not one Gantry receives from.
    #[error("unknown forge {0:?}: use one of github, gitlab, gitea, git")]
    Forge(String),
    /// No clone URL.
    #[error("the repository needs a clone URL")]
    NoUrl,
    /// The webhook secret is too short to be worth anything.
    #[error("a webhook secret needs at least 8 characters")]
    ShortSecret,
}

/// The record to store for `new`: validated, with a generated secret and the forge's full name (given, or
/// read from the clone URL) filled in.
pub fn new_repo_record(new: NewRepo) -> Result<NewRepoRecord, RepoError> {
    let name = RepoName::new(new.name).map_err(|e| RepoError::Name(e.to_string()))?;
    let forge = new.forge.unwrap_or_else(|| "git".into());
    if !FORGES.contains(&forge.as_str()) {
        return Err(RepoError::Forge(forge));
    }
    let url = new.url.trim().to_owned();
    if url.is_empty() {
        return Err(RepoError::NoUrl);
    }
    let secret = match new.secret {
        Some(s) if s.len() < 8 => return Err(RepoError::ShortSecret),
        Some(s) => s,
        None => generate_secret(),
    };
    let forge_full_name = match new.forge_full_name {
        Some(full) if !full.trim().is_empty() => Some(full.trim().trim_matches('/').to_owned()),
        _ if forge != "git" => full_name_from_url(&url),
        _ => None,
    };
    Ok(NewRepoRecord {
        name: name.to_string(),
        url,
        forge,
        forge_full_name,
        secret,
    })
}

/// `owner/name` (GitLab: `group/subgroup/name`) from an HTTP(S), ssh:// or scp-like clone URL.
pub fn full_name_from_url(url: &str) -> Option<String> {
    let path = if let Some((_, rest)) = url.split_once("://") {
        rest.split_once('/')?.1
    } else {
        // scp-like: git@host:owner/name.git
        url.split_once(':')?.1
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    (path.contains('/') && !path.starts_with('/')).then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_come_from_every_form_of_clone_url() {
        for (url, full) in [
            ("https://github.com/octo/hello.git", Some("octo/hello")),
            (
                "https://gitlab.example.com/group/sub/proj",
                Some("group/sub/proj"),
            ),
            ("git@github.com:octo/hello.git", Some("octo/hello")),
            ("ssh://git@gitea.local:2222/o/r.git", Some("o/r")),
            ("https://example.com/lonely", None),
        ] {
            assert_eq!(full_name_from_url(url).as_deref(), full, "{url}");
        }
    }

    #[test]
    fn requests_are_checked_and_completed() {
        let new = |forge: Option<&str>, secret: Option<&str>| NewRepo {
            name: "r".into(),
            url: "https://gitlab.com/g/p.git".into(),
            forge: forge.map(Into::into),
            forge_full_name: None,
            secret: secret.map(Into::into),
        };
        let made = new_repo_record(new(Some("gitlab"), None)).unwrap();
        assert_eq!(made.forge_full_name.as_deref(), Some("g/p"));
        assert_eq!(made.secret.len(), 40);
        assert_eq!(
            new_repo_record(new(None, None)).unwrap().forge_full_name,
            None
        );
        assert_eq!(
            new_repo_record(new(Some("bitbucket"), None)).err(),
            Some(RepoError::Forge("bitbucket".into()))
        );
        assert_eq!(
            new_repo_record(new(None, Some("short"))).err(),
            Some(RepoError::ShortSecret)
        );
    }
}
