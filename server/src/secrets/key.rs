//! The server's sealing key: 32 random bytes in a file of their own (mode 0600), made on first start. Servers
//! sharing one PostgreSQL must share the file. XChaCha20-Poly1305 with a random 24-byte nonce per value, and the
//! value's place (repository and name) as associated data, so a sealed value copied to another row does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Why a key could not be loaded or a value not opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file could not be read or written.
    #[error("the secret key file {0}: {1}")]
    KeyFile(PathBuf, std::io::Error),
    /// The key file holds something other than a key.
    #[error("the secret key file {0} does not hold a 32-byte key (64 hex digits)")]
    BadKey(PathBuf),
    /// The key file can be read by others than its owner.
    #[error("the secret key file {0} is readable by others (mode {1:o}); make it 0600")]
    Exposed(PathBuf, u32),
    /// Opening failed: another key sealed it, or it was changed or moved.
    #[error("a sealed value does not open with this server's key (was the key file replaced?)")]
    Open,
}

/// Seals and opens values with the server's key.
#[derive(Clone)]
pub struct SealingKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    /// Reads the key at `path`, or makes one there (mode 0600) when there is no file.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let err = |e| SealError::KeyFile(path.to_owned(), e);
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mode = std::fs::metadata(path).map_err(err)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SealError::Exposed(path.to_owned(), mode));
                }
                let bytes = hex::decode(text.trim()).map_err(|_| SealError::BadKey(path.into()))?;
                Self::from_bytes(&bytes).ok_or_else(|| SealError::BadKey(path.into()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; KEY_LEN];
                rand::rng().fill_bytes(&mut bytes);
                // create_new: two servers starting at once on one data dir must not each write a different key.
                let created = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path);
                match created {
                    Ok(mut file) => {
                        file.write_all(format!("{}\n", hex::encode(bytes)).as_bytes())
                            .and_then(|()| file.sync_all())
                            .map_err(err)?;
                        Ok(Self::from_bytes(&bytes).expect("32 bytes"))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(err(e)),
                }
            }
            Err(e) => Err(err(e)),
        }
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() == KEY_LEN).then(|| Self {
            cipher: XChaCha20Poly1305::new_from_slice(bytes).expect("32-byte key"),
        })
    }

    /// Nonce followed by the ciphertext of `plain`, bound to `place` (`RepoCredential::place`, or
    /// `repo:{id}:secret:{NAME}` for a job secret).
    pub fn seal(&self, place: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: place.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any length a database holds");
        [nonce.as_slice(), &sealed].concat()
    }

    /// The plain bytes of what `seal` made for the same `place`.
    pub fn open(&self, place: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SealError::Open)?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: place.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let key = SealingKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = key.seal("repo:1:secret:A", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open("repo:1:secret:A", &sealed).unwrap(), b"hunter2");
        assert!(matches!(
            key.open("repo:2:secret:A", &sealed),
            Err(SealError::Open)
        ));
        let again = SealingKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("repo:1:secret:A", &sealed).unwrap(), b"hunter2");
        let other = SealingKey::from_bytes(&[7; 32]).unwrap();
        assert!(matches!(
            other.open("repo:1:secret:A", &sealed),
            Err(SealError::Open)
        ));
        let mut changed = sealed.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(matches!(
            key.open("repo:1:secret:A", &changed),
            Err(SealError::Open)
        ));
        assert_ne!(
            key.seal("p", b"x"),
            key.seal("p", b"x"),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        SealingKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SealingKey::load_or_create(&path),
            Err(SealError::Exposed(_, 0o644))
        ));
    }
}
