//! `checkout:` (docs/pipeline.md, "Checkout"): how much of the repository a job's workspace gets.

use serde::{Deserialize, Serialize};

/// The most history a job may ask for by number (`depth: 0` asks for all of it).
pub const MAX_DEPTH: u32 = 1_000_000;

/// What a job's workspace holds besides the commit's files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkout {
    /// None: the files only, no `.git` (the default, and the fastest). `Some(n)`: a `.git` holding the last `n`
    /// commits of history; `Some(0)`: all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    /// Check out the repository's submodules too (fetched with the repository's own clone credential).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub submodules: bool,
}

impl Checkout {
    /// Whether this is the default, so that job specs without `checkout:` stay as they were on the wire.
    pub fn is_default(&self) -> bool {
        *self == Checkout::default()
    }

    /// How deep the server's mirror must be for this job: None for the commit alone, Some(0) for everything.
    pub fn history(&self) -> Option<u32> {
        self.depth
    }

    /// Checks the limits serde cannot say.
    pub(crate) fn check(&self) -> Result<(), String> {
        match self.depth {
            Some(depth) if depth > MAX_DEPTH => Err(format!(
                "checkout.depth is at most {MAX_DEPTH} (0 asks for the whole history)"
            )),
            _ => Ok(()),
        }
    }
}
