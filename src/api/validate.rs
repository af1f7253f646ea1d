//! Size and shape limits on every request field, checked before any work.
//! Messages name the field, never its value (it may be a secret).

use crate::accounts::rules::{MAX_NAME_LEN, MAX_SCOPE_LEN, MAX_SCOPES, MAX_SECRET_LEN};
use crate::accounts::rules::{is_account_name, is_scope};
use crate::authority::AuthError;

/// Longest audience.
pub const MAX_AUDIENCE_LEN: usize = 256;
/// Longest refresh token accepted before it is even parsed.
pub const MAX_REFRESH_TOKEN_LEN: usize = 512;

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::InvalidRequest(message.into())
}

/// Checks a user name or client id.
pub fn account_name<'a>(field: &str, name: &'a str) -> Result<&'a str, AuthError> {
    if name.is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    if !is_account_name(name) {
        return Err(invalid(format!(
            "{field} must be 1-{MAX_NAME_LEN} letters, digits or . _ @ + -"
        )));
    }
    Ok(name)
}

/// Checks a password or client secret: present and not oversize.
pub fn secret<'a>(field: &str, value: &'a str) -> Result<&'a str, AuthError> {
    if value.is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    if value.len() > MAX_SECRET_LEN {
        return Err(invalid(format!(
            "{field} is longer than {MAX_SECRET_LEN} bytes"
        )));
    }
    Ok(value)
}

/// Checks the requested scopes.
pub fn scopes(requested: &[String]) -> Result<&[String], AuthError> {
    if requested.len() > MAX_SCOPES {
        return Err(invalid(format!("more than {MAX_SCOPES} scopes")));
    }
    if let Some(bad) = requested.iter().find(|s| !is_scope(s)) {
        let shown: String = bad.chars().take(32).collect();
        return Err(invalid(format!(
            "scope {shown:?} is not a scope token (1-{MAX_SCOPE_LEN} printable ASCII, no spaces)"
        )));
    }
    Ok(requested)
}

/// Checks the audience; empty means the default.
pub fn audience(audience: &str) -> Result<Option<&str>, AuthError> {
    if audience.is_empty() {
        return Ok(None);
    }
    if audience.len() > MAX_AUDIENCE_LEN || !audience.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(invalid(format!(
            "audience must be 1-{MAX_AUDIENCE_LEN} printable ASCII characters without spaces"
        )));
    }
    Ok(Some(audience))
}

/// Checks a requested lifetime: unset or zero is none, negative is a
/// mistake.
pub fn ttl(ttl: Option<&prost_types::Duration>) -> Result<Option<std::time::Duration>, AuthError> {
    let Some(ttl) = ttl else {
        return Ok(None);
    };
    if ttl.seconds < 0 || ttl.nanos < 0 {
        return Err(invalid("ttl must not be negative"));
    }
    let seconds = u64::try_from(ttl.seconds).unwrap_or(0);
    let nanos = u32::try_from(ttl.nanos).unwrap_or(0);
    let ttl = std::time::Duration::new(seconds, 0)
        .saturating_add(std::time::Duration::from_nanos(u64::from(nanos)));
    if ttl.is_zero() {
        return Ok(None);
    }
    // Token times are whole seconds: less would expire as it is issued.
    if ttl < std::time::Duration::from_secs(1) {
        return Err(invalid("ttl must be at least 1s (or unset)"));
    }
    Ok(Some(ttl))
}

/// Checks a refresh token's size; its format is the authority's business.
pub fn refresh_token(token: &str) -> Result<&str, AuthError> {
    if token.is_empty() {
        return Err(invalid("refresh_token is required"));
    }
    if token.len() > MAX_REFRESH_TOKEN_LEN {
        return Err(invalid(format!(
            "refresh_token is longer than {MAX_REFRESH_TOKEN_LEN} bytes"
        )));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists() {
        assert!(scopes(&["read".to_string()]).is_ok());
        assert!(scopes(&["a b".to_string()]).is_err());
        assert!(scopes(&vec!["a".to_string(); MAX_SCOPES + 1]).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(account_name("username", "alice").unwrap(), "alice");
        assert!(account_name("username", "").is_err());
        assert!(account_name("username", "a{b}").is_err());
    }

    #[test]
    fn audiences() {
        assert_eq!(audience("").unwrap(), None);
        assert_eq!(audience("billing").unwrap(), Some("billing"));
        assert!(audience("two words").is_err());
        assert!(audience(&"a".repeat(MAX_AUDIENCE_LEN + 1)).is_err());
    }

    #[test]
    fn lifetimes() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(ttl(None).unwrap(), None);
        assert_eq!(ttl(Some(&d(0, 0))).unwrap(), None);
        assert_eq!(
            ttl(Some(&d(60, 0))).unwrap(),
            Some(std::time::Duration::from_secs(60))
        );
        assert!(ttl(Some(&d(-1, 0))).is_err());
        assert!(ttl(Some(&d(0, -5))).is_err());
        assert!(ttl(Some(&d(0, 500_000_000))).is_err());
        assert!(ttl(Some(&d(i64::MAX, 999_999_999))).unwrap().is_some());
    }

    #[test]
    fn secrets_and_tokens() {
        assert!(secret("password", "").is_err());
        assert!(secret("password", &"x".repeat(MAX_SECRET_LEN + 1)).is_err());
        assert!(refresh_token("").is_err());
        assert!(refresh_token(&"x".repeat(MAX_REFRESH_TOKEN_LEN + 1)).is_err());
        assert!(refresh_token("garbage").is_ok());
    }
}
