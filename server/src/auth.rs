//! Bearer tokens: generated from the OS's randomness, shown once, stored only as SHA-256 hashes.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new random token with a prefix that says what it is for (`gantry_admin_…`, `gantry_pool_…`).
pub fn generate_token(kind: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("gantry_{kind}_{}", hex::encode(bytes))
}

/// The hash stored in place of a token. Tokens are long and random, so a plain hash is enough (no salt needed).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh webhook secret.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hashes_stable() {
        let a = generate_token("admin");
        assert!(a.starts_with("gantry_admin_"));
        assert_ne!(a, generate_token("admin"));
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_eq!(hash_token(&a).len(), 64);
    }
}
