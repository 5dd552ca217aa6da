//! A repository's secrets and credentials, sealed on the way into the store and opened only on the way to a
//! job or a fetch: what the API sets, what a lease carries (never for a pull request from a fork), what the
//! mirrors clone with.

use super::{SealError, SealingKey};
use crate::store::{
    ClaimedJob, RepoCredential, RepoRecord, SealedSecret, SecretRecord, Store, StoreError,
};
use gantry_model::secret::{self, CloneCredential, SecretEnv, SecretError};
use gantry_model::wire::RepoSettings;
use std::sync::Arc;

/// Why a secret or a credential could not be set or read.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The name or value is refused.
    #[error(transparent)]
    Invalid(#[from] SecretError),
    /// A token is not usable.
    #[error("{0}")]
    BadToken(String),
    /// The repository has as many secrets as it may.
    #[error(
        "a repository may have at most {} secrets",
        secret::MAX_SECRETS_PER_REPO
    )]
    TooMany,
    /// No such repository.
    #[error("no repository named {0:?}")]
    NoRepo(String),
    /// No such secret.
    #[error("repository {0:?} has no secret named {1:?}")]
    NoSecret(String, String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored value does not open with this server's key.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Seals, stores and opens repositories' secrets and credentials.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn Store>,
    key: SealingKey,
}

/// Where a job secret is sealed to: it opens only as this repository's secret of this name.
fn place(repo_id: i64, name: &str) -> String {
    format!("repo:{repo_id}:secret:{name}")
}

impl Vault {
    /// A vault over `store`, sealing with `key`.
    pub fn new(store: Arc<dyn Store>, key: SealingKey) -> Self {
        Self { store, key }
    }

    async fn repo(&self, name: &str) -> Result<RepoRecord, VaultError> {
        self.store
            .get_repo(name)
            .await?
            .ok_or_else(|| VaultError::NoRepo(name.to_owned()))
    }

    /// Sets (or replaces) secret `name` of `repo`.
    pub async fn set(&self, repo: &str, name: &str, value: &str) -> Result<(), VaultError> {
        secret::check_name(name)?;
        secret::check_value(value.as_bytes())?;
        let repo = self.repo(repo).await?;
        let existing = self.store.list_repo_secrets(repo.id).await?;
        if existing.len() >= secret::MAX_SECRETS_PER_REPO
            && !existing.iter().any(|s| s.name == name)
        {
            return Err(VaultError::TooMany);
        }
        let sealed = self.key.seal(&place(repo.id, name), value.as_bytes());
        Ok(self.store.set_repo_secret(repo.id, name, &sealed).await?)
    }

    /// Removes secret `name` of `repo`.
    pub async fn remove(&self, repo: &str, name: &str) -> Result<(), VaultError> {
        let record = self.repo(repo).await?;
        if self.store.delete_repo_secret(record.id, name).await? {
            Ok(())
        } else {
            Err(VaultError::NoSecret(repo.to_owned(), name.to_owned()))
        }
    }

    /// The names of `repo`'s secrets and when each was set.
    pub async fn list(&self, repo: &str) -> Result<Vec<SecretRecord>, VaultError> {
        let repo = self.repo(repo).await?;
        Ok(self.store.list_repo_secrets(repo.id).await?)
    }

    /// Changes `repo`'s settings, its tokens included (sealed; an empty one removes it); returns it as now.
    pub async fn update_repo(
        &self,
        repo: &str,
        settings: &RepoSettings,
    ) -> Result<RepoRecord, VaultError> {
        let record = self.repo(repo).await?;
        let tokens = [
            (RepoCredential::Clone, &settings.clone_token),
            (RepoCredential::Status, &settings.status_token),
        ];
        // All checked before any is stored, so a refused request changes nothing.
        for (_, token) in &tokens {
            if let Some(token) = token {
                check_token(token)?;
            }
        }
        for (which, token) in tokens {
            let Some(token) = token else { continue };
            let sealed = match (which, token.trim()) {
                (_, "") => None,
                // Kept as `user:token`, the forge's user name decided once, so a lease needs no forge.
                (RepoCredential::Clone, token) => {
                    let cred = CloneCredential::from_token(token, &record.forge);
                    let plain = format!("{}:{}", cred.username, cred.password);
                    Some(self.key.seal(&which.place(record.id), plain.as_bytes()))
                }
                (RepoCredential::Status, token) => {
                    Some(self.key.seal(&which.place(record.id), token.as_bytes()))
                }
            };
            self.store
                .set_repo_credential(record.id, which, sealed.as_deref())
                .await?;
        }
        Ok(self.store.update_repo_settings(repo, settings).await?)
    }

    /// The secrets a claimed job gets: none when its pipeline builds a pull request from a fork (whoever
    /// opened it wrote the steps), nor when the repository has none (known from the claim: no query).
    pub async fn lease_secrets(&self, claimed: &ClaimedJob) -> Result<SecretEnv, StoreError> {
        let from_fork = claimed.pull_request.as_ref().is_some_and(|pr| pr.from_fork);
        if !claimed.has_secrets || from_fork {
            return Ok(SecretEnv::default());
        }
        let mut env = Vec::new();
        for SealedSecret { name, sealed } in self.store.sealed_repo_secrets(claimed.repo_id).await?
        {
            match self.key.open(&place(claimed.repo_id, &name), &sealed) {
                Ok(plain) => env.push((name, String::from_utf8_lossy(&plain).into_owned())),
                // Left out rather than failing the lease: the job says which variable it misses.
                Err(error) => {
                    tracing::error!(repo = %claimed.repo, secret = %name, %error, "a secret does not open; the job runs without it")
                }
            }
        }
        Ok(SecretEnv(env))
    }

    /// The clone credential `sealed` (as a claim carries it) of repository `repo_id`, opened.
    pub fn open_clone_credential(
        &self,
        repo_id: i64,
        sealed: Option<&[u8]>,
    ) -> Option<CloneCredential> {
        let plain = self
            .key
            .open(&RepoCredential::Clone.place(repo_id), sealed?)
            .inspect_err(|error| tracing::error!(repo_id, %error, "the clone token does not open"))
            .ok()?;
        let plain = String::from_utf8_lossy(&plain);
        let (username, password) = plain.split_once(':')?;
        Some(CloneCredential {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The clone credential of the repository called `repo`, for the server's mirror.
    pub async fn clone_credential(
        &self,
        repo: &str,
    ) -> Result<Option<CloneCredential>, VaultError> {
        let record = self.repo(repo).await?;
        if !record.has_clone_token {
            return Ok(None);
        }
        let sealed = self
            .store
            .repo_credential(record.id, RepoCredential::Clone)
            .await?;
        Ok(self.open_clone_credential(record.id, sealed.as_deref()))
    }
}

/// A token is one line of printable characters, without spaces (an empty one removes it).
fn check_token(token: &str) -> Result<(), VaultError> {
    let token = token.trim();
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(VaultError::BadToken(
            "a token cannot hold spaces, line breaks or control characters".into(),
        ));
    }
    if token.len() > 4096 {
        return Err(VaultError::BadToken(
            "a token may have at most 4096 bytes".into(),
        ));
    }
    Ok(())
}
