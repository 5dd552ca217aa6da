//! Repository secrets as the wire and the API see them: their names (environment variable names a user may
//! choose), the values a lease carries (whose `Debug` never shows them), and the rules a value must meet.

pub mod mask;

use serde::{Deserialize, Serialize};

/// The shortest secret value accepted: shorter ones would mask common words and numbers all over a log.
pub const MIN_VALUE_BYTES: usize = 4;
/// The longest secret value accepted (a certificate or a key file fits; a secret is not a file store).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The most secrets one repository may have.
pub const MAX_SECRETS_PER_REPO: usize = 100;

/// Why a secret's name or value is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Not an environment variable name.
    #[error(
        "{0:?} is not a valid secret name: use letters, digits and '_', not starting with a digit (at most 128)"
    )]
    BadName(String),
    /// A name Gantry sets itself.
    #[error("{0:?} is reserved: Gantry sets CI and every GANTRY_* variable itself")]
    Reserved(String),
    /// Too short to be masked in logs without masking everything else.
    #[error(
        "a secret value needs at least {MIN_VALUE_BYTES} bytes (shorter ones cannot be masked in logs)"
    )]
    TooShort,
    /// Too long.
    #[error("a secret value may have at most {MAX_VALUE_BYTES} bytes")]
    TooLong,
    /// Holds a NUL byte, which no environment variable can.
    #[error("a secret value cannot hold a NUL byte")]
    Nul,
}

/// Checks that `name` is an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`) other than `CI`, `GANTRY`
/// and `GANTRY_*`, which Gantry sets for every job.
pub fn check_name(name: &str) -> Result<(), SecretError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || name.len() > 128 || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(SecretError::BadName(name.to_owned()));
    }
    if name == "CI" || name == "GANTRY" || name.starts_with("GANTRY_") {
        return Err(SecretError::Reserved(name.to_owned()));
    }
    Ok(())
}

/// Checks a secret value's size.
pub fn check_value(value: &[u8]) -> Result<(), SecretError> {
    match value.len() {
        n if n < MIN_VALUE_BYTES => Err(SecretError::TooShort),
        n if n > MAX_VALUE_BYTES => Err(SecretError::TooLong),
        _ if value.contains(&0) => Err(SecretError::Nul),
        _ => Ok(()),
    }
}

/// A job's secrets, name and value, as the lease carries them; `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretEnv(pub Vec<(String, String)>);

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}=***")))
            .finish()
    }
}

impl SecretEnv {
    /// No secrets.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values, for masking them in the job's log.
    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|(_, value)| value.as_bytes())
    }
}

/// HTTP basic credentials to clone a private repository with; `Debug` shows the user name only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneCredential {
    /// The user name the forge expects with a token (`x-access-token` on GitHub, `oauth2` on GitLab).
    pub username: String,
    /// The token.
    pub password: String,
}

impl std::fmt::Debug for CloneCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CloneCredential({}:***)", self.username)
    }
}

impl CloneCredential {
    /// The credential a stored clone token stands for: `user:token` as given, else the token with the user
    /// name `forge` expects with one (any name does for Gitea/Forgejo and plain git servers' own checks).
    pub fn from_token(token: &str, forge: &str) -> Self {
        if let Some((username, password)) = token.split_once(':') {
            return Self {
                username: username.to_owned(),
                password: password.to_owned(),
            };
        }
        let username = match forge {
            "github" => "x-access-token",
            "gitlab" => "oauth2",
            _ => "gantry",
        };
        Self {
            username: username.to_owned(),
            password: token.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_environment_variable_names_gantry_does_not_set() {
        for ok in ["MY_SECRET", "_x", "a1", "Gantry_token", "CIA"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "Ä", "A=B", &"A".repeat(129)] {
            assert!(
                matches!(check_name(bad), Err(SecretError::BadName(_))),
                "{bad}"
            );
        }
        for reserved in ["CI", "GANTRY", "GANTRY_REPO", "GANTRY_ANYTHING"] {
            assert!(
                matches!(check_name(reserved), Err(SecretError::Reserved(_))),
                "{reserved}"
            );
        }
    }

    #[test]
    fn values_must_be_long_enough_to_mask_and_not_huge() {
        assert_eq!(check_value(b"abc"), Err(SecretError::TooShort));
        assert_eq!(check_value(b"abcd"), Ok(()));
        assert_eq!(
            check_value(&vec![b'x'; MAX_VALUE_BYTES + 1]),
            Err(SecretError::TooLong)
        );
        assert_eq!(check_value(b"ab\0cd"), Err(SecretError::Nul));
    }

    #[test]
    fn debug_output_never_shows_values() {
        let env = SecretEnv(vec![("TOKEN".into(), "hunter22".into())]);
        let cred = CloneCredential::from_token("ghp_abcdef", "github");
        let shown = format!("{env:?} {cred:?}");
        assert!(
            !shown.contains("hunter22") && !shown.contains("ghp_abcdef"),
            "{shown}"
        );
        assert!(
            shown.contains("TOKEN") && shown.contains("x-access-token"),
            "{shown}"
        );
    }

    #[test]
    fn a_token_gets_the_forge_s_user_name_unless_it_brings_its_own() {
        assert_eq!(
            CloneCredential::from_token("t0k3n", "gitlab").username,
            "oauth2"
        );
        assert_eq!(
            CloneCredential::from_token("t0k3n", "git").username,
            "gantry"
        );
        let own = CloneCredential::from_token("ci-bot:s3cr:et", "gitea");
        assert_eq!(
            (own.username.as_str(), own.password.as_str()),
            ("ci-bot", "s3cr:et")
        );
    }
}
