//! Turning what Redis answers into the store's types. Anything unexpected is
//! [`StoreError::Corrupt`], never a panic.

use crate::store::{Rotation, SessionGrant, StoreError};
use crate::tokens::{SealedSecret, TokenHash};

/// A Redis failure: unreachable, timed out, or refused.
pub(super) fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// A present, UTF-8 field.
pub(super) fn text(field: Option<&Vec<u8>>) -> Result<String, StoreError> {
    let bytes = field.ok_or_else(|| StoreError::Corrupt("missing field".into()))?;
    String::from_utf8(bytes.clone()).map_err(|_| StoreError::Corrupt("non-UTF-8 field".into()))
}

/// A present, decimal field.
pub(super) fn number(field: Option<&Vec<u8>>) -> Result<i64, StoreError> {
    text(field)?
        .parse()
        .map_err(|_| StoreError::Corrupt("non-numeric field".into()))
}

/// A present, 32-byte field.
pub(super) fn hash32(field: Option<&Vec<u8>>) -> Result<[u8; 32], StoreError> {
    let bytes = field.ok_or_else(|| StoreError::Corrupt("missing field".into()))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| StoreError::Corrupt("field is not 32 bytes".into()))
}

/// An optional decimal field; absent is `default`.
pub(super) fn number_or(field: Option<&String>, default: i64) -> Result<i64, StoreError> {
    match field {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| StoreError::Corrupt("non-numeric field".into())),
    }
}

/// `sub, scope, aud, created, absolute expiry, account version` after a tag.
fn grant(reply: &[Vec<u8>]) -> Result<SessionGrant, StoreError> {
    Ok(SessionGrant {
        subject: text(reply.get(1))?,
        scope: text(reply.get(2))?,
        audience: text(reply.get(3))?,
        created_ms: number(reply.get(4))?,
        absolute_expiry_ms: number(reply.get(5))?,
        account_version: number(reply.get(6))?,
    })
}

/// What `rotate.lua` answered.
pub(super) fn rotation(reply: Vec<Vec<u8>>) -> Result<Rotation, StoreError> {
    match reply.first().map(Vec::as_slice) {
        Some(b"rotated") => Ok(Rotation::Rotated(grant(&reply)?)),
        Some(b"replayed") => Ok(Rotation::Replayed {
            grant: grant(&reply)?,
            sealed_successor: SealedSecret(hash32(reply.get(7))?),
            current: TokenHash(hash32(reply.get(8))?),
        }),
        Some(b"reused") => Ok(Rotation::Reused {
            subject: text(reply.get(1))?,
        }),
        Some(b"superseded") => Ok(Rotation::Superseded {
            subject: text(reply.get(1))?,
        }),
        Some(b"invalid") => Ok(Rotation::Invalid),
        Some(b"announcing") => Err(StoreError::another_announces()),
        _ => Err(StoreError::Corrupt("unexpected rotate reply".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(parts: &[&str]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn rotations_parse_and_garbage_is_corrupt_not_a_panic() {
        let rotated = bytes(&["rotated", "alice", "read", "internal", "1", "2", "3"]);
        let Ok(Rotation::Rotated(grant)) = rotation(rotated) else {
            panic!("rotated")
        };
        assert_eq!(grant.account_version, 3);
        for garbage in [
            bytes(&[]),
            bytes(&["rotated"]),
            bytes(&["rotated", "a", "b", "c", "x", "2", "3"]),
            bytes(&[
                "replayed", "alice", "read", "internal", "1", "2", "3", "short",
            ]),
            bytes(&["what"]),
        ] {
            assert!(matches!(rotation(garbage), Err(StoreError::Corrupt(_))));
        }
        assert_eq!(rotation(bytes(&["invalid"])).unwrap(), Rotation::Invalid);
    }
}
