//! Ed25519 signing keys in PASERK form: loading, generating, identifying.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
    /// The key is one anyone can sign with.
    #[error(
        "{path}: the key's seed is all zeros (a published test vector anyone can sign with); \
         generate one with `tokend keys generate`",
        path = path.display()
    )]
    AllZeroSeed {
        /// The file.
        path: PathBuf,
    },
    /// Key generation failed (the operating system's random source).
    #[error("could not generate a key")]
    Generate,
    /// A file holding a secret key can be read by group or others.
    #[error(
        "{path}: a secret key readable by group or others (mode {mode:o}); \
         run `chmod 600 {path}` (a root-owned file may be 0640, as Kubernetes \
         mounts secrets with fsGroup), or pass --allow-insecure-key-file",
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
    /// Checks the permissions of the secret key file at `path`, with
    /// PostgreSQL's rule for its TLS key: a file owned by anyone but root
    /// must be readable by its owner only (at most 0600); a file owned by
    /// root may also be readable by its group (at most 0640). The second is
    /// what Kubernetes makes of a secret volume with `fsGroup` (root-owned,
    /// group `fsGroup`, 0440): the group is the pod's own. Writable by group
    /// or others, or readable by others, is never accepted.
    fn check(self, path: &Path) -> Result<(), KeyError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let metadata = fs::metadata(path).map_err(|source| KeyError::Io {
                path: path.to_owned(),
                source,
            })?;
            let mode = metadata.permissions().mode() & 0o777;
            let forbidden = if metadata.uid() == 0 { 0o037 } else { 0o077 };
            if mode & forbidden != 0 {
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
        let signing = SigningKey::from_paserk(&text)
            .map_err(|problem| problem.in_file(path, "k4.public or k4.secret"))?;
        Ok(signing.published().clone())
    }
}

/// Why a text is not a usable PASERK `k4.secret`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKeyProblem {
    /// Not a `k4.secret` of 64 bytes whose public half matches its seed.
    Format,
    /// A seed of zeros: a published test vector, which anyone can sign with.
    AllZeroSeed,
}

impl SecretKeyProblem {
    /// The [`KeyError`] for the file at `path`, which should have held a
    /// key of type `expected`.
    fn in_file(self, path: &Path, expected: &'static str) -> KeyError {
        match self {
            SecretKeyProblem::Format => KeyError::Format {
                path: path.to_owned(),
                expected,
            },
            SecretKeyProblem::AllZeroSeed => KeyError::AllZeroSeed {
                path: path.to_owned(),
            },
        }
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

    /// Parses a PASERK `k4.secret` (seed and public key), refusing one
    /// whose public half does not match its seed, and one with an all-zero
    /// seed (a published test key; the Ed25519 library would panic on it).
    pub fn from_paserk(text: &str) -> Result<SigningKey, SecretKeyProblem> {
        let text = text.trim();
        let encoded = text
            .strip_prefix("k4.secret.")
            .ok_or(SecretKeyProblem::Format)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SecretKeyProblem::Format)?;
        let seed = bytes.get(..32).filter(|_| bytes.len() == 64);
        match seed {
            None => return Err(SecretKeyProblem::Format),
            Some(seed) if seed.iter().all(|b| *b == 0) => {
                return Err(SecretKeyProblem::AllZeroSeed);
            }
            Some(_) => {}
        }
        let secret =
            AsymmetricSecretKey::<V4>::try_from(text).map_err(|_| SecretKeyProblem::Format)?;
        let public =
            AsymmetricPublicKey::<V4>::try_from(&secret).map_err(|_| SecretKeyProblem::Format)?;
        Ok(SigningKey {
            published: PublishedKey::of(&public),
            secret,
        })
    }

    /// Reads a PASERK `k4.secret` file, refusing one that group or others
    /// can read unless `policy` allows it.
    pub fn load(path: &Path, policy: KeyFilePolicy) -> Result<SigningKey, KeyError> {
        policy.check(path)?;
        let text = read_key_file(path)?;
        SigningKey::from_paserk(&text).map_err(|problem| problem.in_file(path, "k4.secret"))
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
        for text in ["k4.secret.nope", "", "k4.secret.", "k4.public.AAAA"] {
            assert_eq!(
                SigningKey::from_paserk(text).err(),
                Some(SecretKeyProblem::Format),
                "{text}"
            );
        }
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The official PASERK `k4.secret` vectors
    /// (github.com/paseto-standard/test-vectors, `PASERK/k4.secret.json`).
    #[test]
    fn paserk_k4_secret_vectors() {
        // k4.secret-1: valid PASERK, but its seed is all zeros: refused with
        // a clear error (Ed25519 libraries refuse such seeds; anyone can
        // sign with it) rather than loaded.
        assert_eq!(
            SigningKey::from_paserk(
                "k4.secret.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA7aie8zrakLWKjqNAqbw1zZTIVdx3iQ6Y6wEihi1naKQ"
            )
            .err(),
            Some(SecretKeyProblem::AllZeroSeed)
        );
        let valid = [
            (
                "k4.secret.cHFyc3R1dnd4eXp7fH1-f4CBgoOEhYaHiImKi4yNjo8c5WpIyC_5kWKhS8VEYSZ05dYfuTF-ZdQFV4D9vLTcNQ",
                "1ce56a48c82ff99162a14bc544612674e5d61fb9317e65d4055780fdbcb4dc35",
            ),
            (
                "k4.secret.cHFyc3R1dnd4eXp7fH1-f4CBgoOEhYaHiImKi4yNjpBg_jdXGl1ufTCxUVTOSp-5LHDIcISPTM3xYmWICX9z9w",
                "60fe37571a5d6e7d30b15154ce4a9fb92c70c870848f4ccdf1626588097f73f7",
            ),
        ];
        for (paserk, public_hex) in valid {
            let key = SigningKey::from_paserk(paserk).expect(paserk);
            let public = AsymmetricPublicKey::<V4>::from(&hex(public_hex)).unwrap();
            assert_eq!(key.published(), &PublishedKey::of(&public));
            assert_eq!(super::paserk(&key.secret), paserk, "round trip");
        }
        // k4.secret-fail-1 (short) and -fail-2 (another kind of key).
        for bad in [
            "707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e",
            "707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9ea0",
        ] {
            let text = format!("k4.secret.{}", URL_SAFE_NO_PAD.encode(hex(bad)));
            assert_eq!(
                SigningKey::from_paserk(&text).err(),
                Some(SecretKeyProblem::Format)
            );
        }
        // A seed whose public half does not match.
        let mut bytes = hex(
            "707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f1ce56a48c82ff99162a14bc544612674e5d61fb9317e65d4055780fdbcb4dc35",
        );
        bytes[63] ^= 1;
        let text = format!("k4.secret.{}", URL_SAFE_NO_PAD.encode(bytes));
        assert_eq!(
            SigningKey::from_paserk(&text).err(),
            Some(SecretKeyProblem::Format)
        );
    }

    #[test]
    fn an_all_zero_seed_file_is_refused_with_a_clear_error_not_a_panic() {
        let dir = tempfile_dir();
        let path = dir.join("zero.key");
        fs::write(
            &path,
            "k4.secret.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA7aie8zrakLWKjqNAqbw1zZTIVdx3iQ6Y6wEihi1naKQ\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        let err = SigningKey::load(&path, KeyFilePolicy::Strict).unwrap_err();
        assert!(matches!(err, KeyError::AllZeroSeed { .. }), "{err}");
        assert!(err.to_string().contains("all zeros"), "{err}");
        let err = PublishedKey::load(&path, KeyFilePolicy::Strict).unwrap_err();
        assert!(matches!(err, KeyError::AllZeroSeed { .. }), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tokend-keys-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn debug_output_has_no_secret() {
        let key = SigningKey::generate().unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains("k4.secret"));
        assert!(debug.contains("k4.pid."));
    }
}

/// What a key this replica knows is for, as administrators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// Signs new access tokens.
    Active,
    /// Verification only, from a file newer than the signing key's: the
    /// next key, published before it signs.
    Next,
    /// Verification only, from a file older than the signing key's (or of
    /// unknown age): a retired key whose tokens may still be live.
    Retired,
}

/// A key with its role and age: what `GetKeys` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key as published.
    pub key: PublishedKey,
    /// What it is for.
    pub role: KeyRole,
    /// When its file was last written (the server's start for an
    /// ephemeral key), ms since the epoch; 0 if unknown.
    pub written_ms: i64,
}

/// The keys a replica signs and verifies with, active first: each
/// verification key is next or retired by its file's age against the
/// signing key's (the files' modification times are all there is).
pub fn inventory(
    active: &PublishedKey,
    active_file: Option<&Path>,
    verification: &[(PublishedKey, &Path)],
    started_ms: i64,
) -> Vec<KeyEntry> {
    let written = |path: &Path| -> i64 {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    let active_written = active_file.map_or(started_ms, written);
    let mut keys = vec![KeyEntry {
        key: active.clone(),
        role: KeyRole::Active,
        written_ms: active_written,
    }];
    for (key, path) in verification {
        if key == active || keys.iter().any(|k| &k.key == key) {
            continue;
        }
        let written_ms = written(path);
        let role = if written_ms > active_written {
            KeyRole::Next
        } else {
            KeyRole::Retired
        };
        keys.push(KeyEntry {
            key: key.clone(),
            role,
            written_ms,
        });
    }
    keys
}
