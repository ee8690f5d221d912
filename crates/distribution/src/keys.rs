//! Ed25519 keys: generation, text files, key ids and the set of keys a host trusts.
//!
//! File formats (one line each, so they paste into config and CI secrets):
//! `flagforge-ed25519-secret:<64 hex>` and `flagforge-ed25519-public:<64 hex>`. A key's id is
//! the first 16 hex digits of the sha256 of its public key bytes.

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

const SECRET_PREFIX: &str = "flagforge-ed25519-secret:";
const PUBLIC_PREFIX: &str = "flagforge-ed25519-public:";

/// Why a key could not be made, read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("cannot get random bytes for a key: {0}")]
    Random(String),
    /// A key file could not be read or written.
    #[error("key file `{path}`: {message}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The text is not a key in the expected format.
    #[error("not a flagforge {expected} key (expected `{prefix}` followed by 64 hex digits)")]
    Format {
        /// `secret` or `public`.
        expected: &'static str,
        /// The expected prefix.
        prefix: &'static str,
    },
}

/// A public key with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: String,
}

impl PublicKey {
    fn new(key: VerifyingKey) -> PublicKey {
        let id = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
        PublicKey { key, id }
    }

    /// The key id: 16 hex digits of the sha256 of the key bytes.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as a one-line text.
    #[must_use]
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_PREFIX}{}", hex::encode(self.key.as_bytes()))
    }

    /// Parses [`Self::to_text`].
    pub fn from_text(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = parse_hex32(text.trim(), PUBLIC_PREFIX).ok_or(KeyError::Format {
            expected: "public",
            prefix: PUBLIC_PREFIX,
        })?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey::new)
            .map_err(|_| KeyError::Format {
                expected: "public",
                prefix: PUBLIC_PREFIX,
            })
    }

    /// Reads a public key file.
    pub fn read(path: &Path) -> Result<PublicKey, KeyError> {
        PublicKey::from_text(&read(path)?)
    }

    /// Checks an Ed25519 signature (strict verification). Callers domain-separate their
    /// messages (envelopes and decision contexts sign different prefixes).
    #[must_use]
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &sig).is_ok()
    }
}

/// A signing key.
pub struct KeyPair {
    key: SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.public.id)
    }
}

impl KeyPair {
    /// A new random key pair.
    #[cfg(feature = "generate")]
    pub fn generate() -> Result<KeyPair, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(KeyPair::from_seed(&seed))
    }

    fn from_seed(seed: &[u8; 32]) -> KeyPair {
        let key = SigningKey::from_bytes(seed);
        let public = PublicKey::new(key.verifying_key());
        KeyPair { key, public }
    }

    /// The public half.
    #[must_use]
    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    /// The secret key as a one-line text.
    #[must_use]
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", hex::encode(self.key.to_bytes()))
    }

    /// Parses [`Self::to_text`].
    pub fn from_text(text: &str) -> Result<KeyPair, KeyError> {
        parse_hex32(text.trim(), SECRET_PREFIX)
            .map(|seed| KeyPair::from_seed(&seed))
            .ok_or(KeyError::Format {
                expected: "secret",
                prefix: SECRET_PREFIX,
            })
    }

    /// Reads a secret key file.
    pub fn read(path: &Path) -> Result<KeyPair, KeyError> {
        KeyPair::from_text(&read(path)?)
    }

    /// Writes `flagforge.key` (mode 0600 on Unix) and `flagforge.pub` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), KeyError> {
        let io = |path: &Path, e: std::io::Error| KeyError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let secret = dir.join("flagforge.key");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&secret).map_err(|e| io(&secret, e))?;
        std::io::Write::write_all(&mut file, format!("{}\n", self.to_text()).as_bytes())
            .map_err(|e| io(&secret, e))?;
        let public = dir.join("flagforge.pub");
        std::fs::write(&public, format!("{}\n", self.public.to_text())).map_err(|e| io(&public, e))
    }

    /// Signs a message (64-byte Ed25519 signature). Callers domain-separate their messages.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|e| KeyError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn parse_hex32(text: &str, prefix: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.strip_prefix(prefix)?).ok()?;
    bytes.try_into().ok()
}

/// The public keys a host accepts signatures from, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, PublicKey>,
}

impl TrustedKeys {
    /// A set of trusted keys.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> TrustedKeys {
        TrustedKeys {
            keys: keys.into_iter().map(|k| (k.id.clone(), k)).collect(),
        }
    }

    /// Looks a key up by id.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// Adds a key; true if it was not trusted before.
    pub fn insert(&mut self, key: PublicKey) -> bool {
        self.keys.insert(key.id.clone(), key).is_none()
    }

    /// Whether no key is trusted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_text_and_files() {
        let k = KeyPair::generate().unwrap();
        let again = KeyPair::from_text(&k.to_text()).unwrap();
        assert_eq!(again.public(), k.public());
        assert_eq!(
            PublicKey::from_text(&k.public().to_text()).unwrap(),
            k.public()
        );
        assert_eq!(k.public().id().len(), 16);
        let dir = tempfile::tempdir().unwrap();
        k.write(dir.path()).unwrap();
        assert_eq!(
            KeyPair::read(&dir.path().join("flagforge.key"))
                .unwrap()
                .public(),
            k.public()
        );
        assert_eq!(
            PublicKey::read(&dir.path().join("flagforge.pub")).unwrap(),
            k.public()
        );
        // Never overwrite an existing secret key.
        assert!(k.write(dir.path()).is_err());
    }

    #[test]
    fn malformed_key_text_is_refused() {
        for bad in [
            "",
            "flagforge-ed25519-secret:zz",
            "flagforge-ed25519-public:00",
            "hello",
        ] {
            assert!(KeyPair::from_text(bad).is_err(), "{bad}");
            assert!(PublicKey::from_text(bad).is_err(), "{bad}");
        }
    }
}
