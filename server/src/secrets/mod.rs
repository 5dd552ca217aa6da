//! Secrets at rest: everything sensitive the database holds for a repository (its job secrets, its clone
//! credential, its status token) is sealed with the server's key, so the database file alone does not reveal it.

pub mod key;
pub mod vault;

pub use key::{SealError, SealingKey};
pub use vault::{Vault, VaultError};
