//! The refresh-token format.
//!
//! `tkd_rt_<session id>.<secret>`: a fixed prefix that secret scanners and
//! humans recognise, the session id (128 random bits, base64url, 22 chars) so
//! the store finds the session without an index, and 256 random bits of secret
//! (base64url, 43 chars). 73 URL-safe characters in all.
//!
//! The store keeps only [`TokenHash`]es. For the reuse grace window the store
//! also keeps the successor's secret sealed under a pad derived from the
//! consumed token ([`RefreshToken::seal_successor`]): useless without the
//! consumed token itself, which the store never sees.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// What every refresh token starts with.
pub const REFRESH_TOKEN_PREFIX: &str = "tkd_rt_";

const SESSION_ID_BYTES: usize = 16;
const SESSION_ID_LEN: usize = 22;
const SECRET_BYTES: usize = 32;
const SECRET_LEN: usize = 43;
/// Length of every refresh token, in bytes.
pub const REFRESH_TOKEN_LEN: usize = REFRESH_TOKEN_PREFIX.len() + SESSION_ID_LEN + 1 + SECRET_LEN;

/// SHA-256 of a whole refresh token: what the store keeps instead of it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A successor secret sealed under the token it replaced.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SealedSecret(pub [u8; 32]);

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedSecret(..)")
    }
}

/// A new random session id: 128 bits, base64url.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; SESSION_ID_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `text` has the shape of a session id.
pub fn is_session_id(text: &str) -> bool {
    text.len() == SESSION_ID_LEN && is_base64url(text)
}

/// A parsed refresh token. Its `Debug` output shows the session id only.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    session_id: String,
    secret: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshToken")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl RefreshToken {
    /// A new token for `session_id` with a fresh random secret.
    pub fn generate(session_id: &str) -> RefreshToken {
        let mut secret = [0u8; SECRET_BYTES];
        rand::thread_rng().fill_bytes(&mut secret);
        RefreshToken {
            session_id: session_id.to_owned(),
            secret,
        }
    }

    /// Parses a presented token; `None` if it is not one of ours.
    pub fn parse(text: &str) -> Option<RefreshToken> {
        if text.len() != REFRESH_TOKEN_LEN {
            return None;
        }
        let rest = text.strip_prefix(REFRESH_TOKEN_PREFIX)?;
        let (session_id, secret) = rest.split_once('.')?;
        if !is_session_id(session_id) || secret.len() != SECRET_LEN || !is_base64url(secret) {
            return None;
        }
        let mut bytes = [0u8; SECRET_BYTES];
        let written = URL_SAFE_NO_PAD
            .decode_slice(secret, &mut bytes)
            .ok()
            .filter(|&n| n == SECRET_BYTES)?;
        debug_assert_eq!(written, SECRET_BYTES);
        // Reject non-canonical encodings (stray low bits), so one token has one text.
        if URL_SAFE_NO_PAD.encode(bytes) != secret {
            return None;
        }
        Some(RefreshToken {
            session_id: session_id.to_owned(),
            secret: bytes,
        })
    }

    /// The session this token belongs to.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The token's text, to hand to the client.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(REFRESH_TOKEN_LEN);
        text.push_str(REFRESH_TOKEN_PREFIX);
        text.push_str(&self.session_id);
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(self.secret, &mut text);
        text
    }

    /// What the store keeps: SHA-256 of the whole token text.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.encode().as_bytes()).into())
    }

    /// Seals `successor`'s secret under a pad only this token can derive.
    pub fn seal_successor(&self, successor: &RefreshToken) -> SealedSecret {
        SealedSecret(xor(&successor.secret, &self.pad()))
    }

    /// Opens what [`seal_successor`](Self::seal_successor) sealed: the successor
    /// in the same session.
    pub fn open_successor(&self, sealed: &SealedSecret) -> RefreshToken {
        RefreshToken {
            session_id: self.session_id.clone(),
            secret: xor(&sealed.0, &self.pad()),
        }
    }

    fn pad(&self) -> [u8; 32] {
        let mut digest = Sha256::new();
        digest.update(b"tokend refresh successor pad v1\0");
        digest.update(self.encode().as_bytes());
        digest.finalize().into()
    }
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

fn is_base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_through_its_text() {
        let sid = new_session_id();
        let token = RefreshToken::generate(&sid);
        let text = token.encode();
        assert_eq!(text.len(), REFRESH_TOKEN_LEN);
        assert!(text.starts_with("tkd_rt_"));
        let parsed = RefreshToken::parse(&text).unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.session_id(), sid);
        assert_eq!(parsed.hash(), token.hash());
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = RefreshToken::generate(&new_session_id()).encode();
        assert!(RefreshToken::parse("").is_none());
        assert!(RefreshToken::parse("garbage").is_none());
        assert!(RefreshToken::parse(&good[1..]).is_none());
        assert!(RefreshToken::parse(&good.replace("tkd_rt_", "tkd_xx_")).is_none());
        assert!(RefreshToken::parse(&good.replacen('.', "_", 1)).is_none());
        let mut bad_char = good.clone();
        bad_char.replace_range(40..41, "!");
        assert!(RefreshToken::parse(&bad_char).is_none());
        let mut non_ascii = good.clone();
        non_ascii.replace_range(40..42, "é");
        assert!(RefreshToken::parse(&non_ascii).is_none());
    }

    #[test]
    fn non_canonical_encodings_are_rejected() {
        let good = RefreshToken::generate(&new_session_id()).encode();
        // The last base64url character carries 2 unused low bits.
        let last = good.chars().last().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.find(last).unwrap();
        let sibling = alphabet.chars().nth(index ^ 1).unwrap();
        let mut twin = good.clone();
        twin.pop();
        twin.push(sibling);
        assert!(RefreshToken::parse(&twin).is_none());
    }

    #[test]
    fn a_sealed_successor_opens_only_with_its_predecessor() {
        let sid = new_session_id();
        let consumed = RefreshToken::generate(&sid);
        let successor = RefreshToken::generate(&sid);
        let sealed = consumed.seal_successor(&successor);
        assert_ne!(sealed.0, successor.secret);
        assert_eq!(consumed.open_successor(&sealed), successor);
        let other = RefreshToken::generate(&sid);
        assert_ne!(other.open_successor(&sealed), successor);
    }

    #[test]
    fn debug_output_has_no_secret() {
        let token = RefreshToken::generate(&new_session_id());
        let debug = format!("{token:?}");
        let text = token.encode();
        let secret = text.rsplit('.').next().unwrap();
        assert!(!debug.contains(secret));
    }
}
