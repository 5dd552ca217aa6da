//! Who may do what: the scopes a caller holds against what a call needs. A private farm (`private = true`) or a
//! private repository is read only with a token; changes always need one.

use gantry_model::wire::Scope;

/// What the caller holds: none when signed out (no token, or a worker's or pool's token, which carry no scope).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller(pub Option<Scope>);

/// Why a call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Denied {
    /// No token, and the call needs one.
    #[error(
        "{what} needs a token with the `{needed}` scope (`Authorization: Bearer …`; `gantry token create` makes one)"
    )]
    SignedOut {
        /// What was asked for, for the message.
        what: String,
        /// The least scope that would do.
        needed: Scope,
    },
    /// A token whose scope is too low.
    #[error("{what} needs the `{needed}` scope; this token has `{held}`")]
    Insufficient {
        /// What was asked for, for the message.
        what: String,
        /// The least scope that would do.
        needed: Scope,
        /// The token's.
        held: Scope,
    },
}

impl Caller {
    /// A caller that holds the admin scope (the server's own calls, tests).
    pub const ADMIN: Caller = Caller(Some(Scope::Admin));

    /// Refuses unless the caller's scope is at least `needed`.
    pub fn require(self, needed: Scope, what: &str) -> Result<(), Denied> {
        match self.0 {
            Some(held) if held >= needed => Ok(()),
            Some(held) => Err(Denied::Insufficient {
                what: what.to_owned(),
                needed,
                held,
            }),
            None => Err(Denied::SignedOut {
                what: what.to_owned(),
                needed,
            }),
        }
    }

    /// Whether the caller may read something that is private (on a private farm, everything is).
    pub fn may_read(self, private: bool) -> bool {
        !private || self.0.is_some()
    }

    /// Refuses unless the caller may read what `private` says of it.
    pub fn require_read(self, private: bool, what: &str) -> Result<(), Denied> {
        if self.may_read(private) {
            Ok(())
        } else {
            self.require(Scope::Read, what)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scope_includes_the_lower_ones() {
        for (held, needed, allowed) in [
            (Scope::Read, Scope::Read, true),
            (Scope::Read, Scope::Write, false),
            (Scope::Write, Scope::Write, true),
            (Scope::Write, Scope::Admin, false),
            (Scope::Admin, Scope::Write, true),
        ] {
            assert_eq!(
                Caller(Some(held)).require(needed, "x").is_ok(),
                allowed,
                "{held} for {needed}"
            );
        }
        assert!(matches!(
            Caller(None).require(Scope::Read, "x"),
            Err(Denied::SignedOut { .. })
        ));
    }

    #[test]
    fn public_things_are_read_signed_out_and_private_ones_with_any_scope() {
        assert!(Caller(None).may_read(false));
        assert!(!Caller(None).may_read(true));
        let refused = Caller(None).require_read(true, "this log").unwrap_err();
        assert!(refused.to_string().contains("`read` scope"), "{refused}");
        assert!(Caller(Some(Scope::Read)).may_read(true));
    }
}
