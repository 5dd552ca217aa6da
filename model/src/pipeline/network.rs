//! `network:`, for a job or as the file's default (docs/pipeline.md, "Network").

use serde::{Deserialize, Serialize};

/// What a job's network namespace reaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Loopback only: the job and its services reach each other on `localhost`, and nothing else.
    #[default]
    None,
    /// Loopback and the outside world through the worker's NAT; never the host itself, link-local
    /// addresses, other jobs, or the worker's `egress_deny` ranges.
    Egress,
}

impl Network {
    /// Whether this is the default, so that job specs without a network stay as they were on the wire.
    pub fn is_none(&self) -> bool {
        *self == Network::None
    }
}
