//! Ed25519 signing keys in PASERK form: loading, generating, identifying.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::paserk::FormatAsPaserk;
use pasetors::version4::V4;

/// Why a key could not be loaded or written. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file does not hold a PASERK `k4.secret` (or `k4.public`) key.
    #[error("{path}: not a PASERK {expected} key")]
    Format {
        /// The file.
        path: PathBuf,
        /// The PASERK type that was expected.
        expected: &'static str,
    },
    /// Key generation failed (the operating system's random source).
    #[error("could not generate a key")]
    Generate,
    /// A file holding a secret key can be read by group or others.
    #[error(
        "{path}: a secret key readable by group or others (mode {mode:o}); \
         run `chmod 600 {path}` (or pass --allow-insecure-key-file)",
        path = path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Whether a secret key file readable by group or others is refused (as ssh
/// does) or loaded with a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyFilePolicy {
    /// Refuse it.
    #[default]
    Strict,
    /// Load it, with a warning.
    AllowInsecure,
}

impl KeyFilePolicy {
    /// Checks the permissions of the secret key file at `path`.
    fn check(self, path: &Path) -> Result<(), KeyError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path)
                .map_err(|source| KeyError::Io {
                    path: path.to_owned(),
                    source,
                })?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                let err = KeyError::Permissions {
                    path: path.to_owned(),
                    mode,
                };
                match self {
                    KeyFilePolicy::Strict => return Err(err),
                    KeyFilePolicy::AllowInsecure => tracing::warn!("{err}"),
                }
            }
        }
        Ok(())
    }
}

/// A verification key as published by `GetPublicKeys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKey {
    /// PASERK `k4.pid`.
    pub key_id: String,
    /// PASERK `k4.public`.
    pub public_key: String,
}

impl PublishedKey {
    /// Describes `public` by its PASERK id and PASERK text.
    pub fn of(public: &AsymmetricPublicKey<V4>) -> PublishedKey {
        PublishedKey {
            key_id: tokend_interceptor::keys::key_id(public),
            public_key: paserk(public),
        }
    }

    /// Reads a verification key from a file holding a PASERK `k4.public`, or a
    /// `k4.secret` (of which only the public half is kept; the file's
    /// permissions are checked as for a signing key).
    pub fn load(path: &Path, policy: KeyFilePolicy) -> Result<PublishedKey, KeyError> {
        let text = read_key_file(path)?;
        if let Ok(public) = AsymmetricPublicKey::<V4>::try_from(text.as_str()) {
            return Ok(PublishedKey::of(&public));
        }
        policy.check(path)?;
        let signing = SigningKey::from_paserk(&text).ok_or(KeyError::Format {
            path: path.to_owned(),
            expected: "k4.public or k4.secret",
        })?;
        Ok(signing.published().clone())
    }
}

/// The key tokend signs access tokens with.
pub struct SigningKey {
    secret: AsymmetricSecretKey<V4>,
    published: PublishedKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the public identity: the secret never reaches a log.
        f.debug_struct("SigningKey")
            .field("key_id", &self.published.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let pair = AsymmetricKeyPair::<V4>::generate().map_err(|_| KeyError::Generate)?;
        Ok(SigningKey {
            published: PublishedKey::of(&pair.public),
            secret: pair.secret,
        })
    }

    /// Parses a PASERK `k4.secret`.
    pub fn from_paserk(text: &str) -> Option<SigningKey> {
        let secret = AsymmetricSecretKey::<V4>::try_from(text.trim()).ok()?;
        let public = AsymmetricPublicKey::<V4>::try_from(&secret).ok()?;
        Some(SigningKey {
            published: PublishedKey::of(&public),
            secret,
        })
    }

    /// Reads a PASERK `k4.secret` file, refusing one that group or others
    /// can read unless `policy` allows it.
    pub fn load(path: &Path, policy: KeyFilePolicy) -> Result<SigningKey, KeyError> {
        policy.check(path)?;
        let text = read_key_file(path)?;
        SigningKey::from_paserk(&text).ok_or(KeyError::Format {
            path: path.to_owned(),
            expected: "k4.secret",
        })
    }

    /// Writes the key as PASERK `k4.secret` to a new file readable only by its
    /// owner. Refuses to overwrite an existing file.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        let mut text = paserk(&self.secret);
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// The secret half, for signing.
    pub(crate) fn secret(&self) -> &AsymmetricSecretKey<V4> {
        &self.secret
    }

    /// The public half and its id, as verifiers see them.
    pub fn published(&self) -> &PublishedKey {
        &self.published
    }
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })
}

fn paserk(key: &dyn FormatAsPaserk) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = key.fmt(&mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_key_loads_back_with_the_same_id() {
        let dir = std::env::temp_dir().join(format!("tokend-key-test-{}", std::process::id()));
        let _ = fs::remove_file(&dir);
        let key = SigningKey::generate().unwrap();
        key.write_new(&dir).unwrap();
        let loaded = SigningKey::load(&dir, KeyFilePolicy::Strict).unwrap();
        assert_eq!(loaded.published(), key.published());
        assert!(key.published().key_id.starts_with("k4.pid."));
        assert!(key.published().public_key.starts_with("k4.public."));
        // Only the public half is kept when the secret is given as a verification key.
        assert_eq!(
            &PublishedKey::load(&dir, KeyFilePolicy::Strict).unwrap(),
            key.published()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwritten.
        assert!(key.write_new(&dir).is_err());
        fs::remove_file(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn secret_key_files_others_can_read_are_refused_unless_allowed() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("tokend-key-perm-{}", std::process::id()));
        let _ = fs::remove_file(&path);
        SigningKey::generate().unwrap().write_new(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = SigningKey::load(&path, KeyFilePolicy::Strict).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(PublishedKey::load(&path, KeyFilePolicy::Strict).is_err());
        assert!(SigningKey::load(&path, KeyFilePolicy::AllowInsecure).is_ok());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(SigningKey::load(&path, KeyFilePolicy::Strict).is_ok());
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(SigningKey::from_paserk("k4.secret.nope").is_none());
        assert!(SigningKey::from_paserk("").is_none());
    }

    #[test]
    fn debug_output_has_no_secret() {
        let key = SigningKey::generate().unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains("k4.secret"));
        assert!(debug.contains("k4.pid."));
    }
}
