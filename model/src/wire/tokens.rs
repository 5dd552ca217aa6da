//! API tokens (`/api/v1/tokens`): named, scoped, shown once. Each scope includes the ones below it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read logs, pipelines, deliveries, test results and artifacts, also of private repositories and on a
    /// private farm.
    Read,
    /// And cancel, retry and trigger pipelines and jobs.
    Write,
    /// And everything else: repositories, secrets, tokens (the admin token's scope).
    Admin,
}

impl Scope {
    /// Every scope, lowest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// Its name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}: read, write or admin"))
    }
}

/// `POST /api/v1/tokens` (admin).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewToken {
    /// A name to list and revoke it by: letters, digits, `.`, `_`, `-`; at most 64.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
}

/// A token as the API shows it: its value only in the answer that created it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenView {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The token itself, once: only its hash is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `GET /api/v1/tokens` (admin).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenList {
    /// Every API token, by name, without values.
    pub tokens: Vec<TokenView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_ordered_and_round_trip() {
        assert!(Scope::Read < Scope::Write && Scope::Write < Scope::Admin);
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
            assert_eq!(
                serde_json::to_string(&scope).unwrap(),
                format!("\"{scope}\"")
            );
        }
        assert!(
            "root"
                .parse::<Scope>()
                .unwrap_err()
                .contains("read, write or admin")
        );
    }
}
