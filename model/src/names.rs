//! Names that arrive from outside (URLs, pipeline files) and end up in paths, cgroups and SQL: validated once.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {what} {name:?}: {reason}")]
pub struct NameError {
    /// What kind of name it was meant to be.
    pub what: &'static str,
    /// The refused text.
    pub name: String,
    /// Why it was refused.
    pub reason: &'static str,
}

fn check(what: &'static str, name: &str, max: usize, extra: &[char]) -> Result<(), NameError> {
    let fail = |reason| {
        Err(NameError {
            what,
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("must not be empty");
    }
    if name.len() > max {
        return fail("is too long");
    }
    if name == "." || name == ".." || name.starts_with('.') {
        return fail("must not start with a dot");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || extra.contains(&c))
    {
        return fail("may only contain letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $max:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Validates `name`.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check($what, &name, $max, $extra)?;
                Ok(Self(name))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A repository's name in Gantry: `[A-Za-z0-9._-]+`, not starting with a dot.
    RepoName, "repository name", 100, &[]
);
name_type!(
    /// A job's name in a pipeline; `:` separates an expanded instance (`test:2`, `lint:stable,x86`) from its
    /// job.
    JobName, "job name", 100, &[':', ',']
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_a_path_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", "a\0b", ".hidden", "sp ace"] {
            assert!(RepoName::new(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            RepoName::new("my-repo_1.x").unwrap().as_str(),
            "my-repo_1.x"
        );
        assert!(JobName::new("test:2").is_ok());
        assert!(RepoName::new("test:2").is_err());
    }
}
