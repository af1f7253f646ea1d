//! What makes a valid account name, scope and password: the rules shared by
//! the gRPC API (checking requests) and the command line (creating accounts).

/// Longest user name or client id.
pub const MAX_NAME_LEN: usize = 128;
/// Longest password or client secret.
pub const MAX_SECRET_LEN: usize = 1024;
/// Most scopes in one request or account.
pub const MAX_SCOPES: usize = 64;
/// Longest scope.
pub const MAX_SCOPE_LEN: usize = 128;

/// The scope a service client needs to introspect tokens of its own
/// audience (`TokenService.Introspect`).
pub const INTROSPECT_SCOPE: &str = "tokend.introspect";

/// The scope that lets a service client introspect tokens of any audience.
pub const INTROSPECT_ANY_SCOPE: &str = "tokend.introspect.any";

/// The scope an access token (or a certified client) needs for every call
/// of the administration API (`tokend.admin.v1.AdminService`).
pub const ADMIN_SCOPE: &str = "tokend.admin";

/// The scope that allows the administration API's read-only calls.
pub const ADMIN_READ_SCOPE: &str = "tokend.admin.read";

/// Whether `name` is a usable user name or client id: 1-128 characters out of
/// letters, digits and `. _ @ + -`. (No braces: names are Redis hash tags.)
pub fn is_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

/// The names no account may have: tokend's issuer name and its default
/// audience, the audiences of tokend's own tokens and of everyday user
/// tokens. An account called so would be the audience of tokens never
/// meant for it (a client `internal` could exchange every user's
/// default-audience token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedNames {
    /// `--issuer`.
    pub issuer: String,
    /// `--audience`.
    pub default_audience: String,
}

impl Default for ReservedNames {
    fn default() -> Self {
        ReservedNames {
            issuer: "tokend".into(),
            default_audience: "internal".into(),
        }
    }
}

impl ReservedNames {
    /// Whether `name` is one of them.
    pub fn contains(&self, name: &str) -> bool {
        name == self.issuer || name == self.default_audience
    }
}

/// Whether `scope` is a scope token (RFC 6749 §3.3): printable ASCII without
/// space, `"` or `\`.
pub fn is_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= MAX_SCOPE_LEN
        && scope
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// Whether `password` is acceptable: 1 to [`MAX_SECRET_LEN`] bytes.
pub fn is_password(password: &str) -> bool {
    !password.is_empty() && password.len() <= MAX_SECRET_LEN
}

/// The scopes as stored: space-separated, each once, in the order given.
pub fn scope_string<S: AsRef<str>>(scopes: &[S]) -> String {
    let mut unique: Vec<&str> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        if !unique.contains(&scope.as_ref()) {
            unique.push(scope.as_ref());
        }
    }
    unique.join(" ")
}

/// The scopes of `wanted` (space-separated) that `allowed` (space-separated)
/// also has, in `wanted`'s order.
pub fn intersect_scopes(wanted: &str, allowed: &str) -> String {
    let allowed: Vec<&str> = allowed.split_ascii_whitespace().collect();
    wanted
        .split_ascii_whitespace()
        .filter(|scope| allowed.contains(scope))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        assert!(is_account_name("alice"));
        assert!(is_account_name("svc.billing-1@corp+x_y"));
        assert!(!is_account_name(""));
        assert!(!is_account_name("a{b}"));
        assert!(!is_account_name("a b"));
        assert!(!is_account_name("ünï"));
        assert!(!is_account_name(&"a".repeat(MAX_NAME_LEN + 1)));
    }

    #[test]
    fn scope_tokens() {
        assert!(is_scope("read:orders"));
        assert!(!is_scope("a b"));
        assert!(!is_scope(""));
        assert!(!is_scope("quo\"te"));
        assert!(!is_scope(&"a".repeat(MAX_SCOPE_LEN + 1)));
    }

    #[test]
    fn scopes_are_stored_once_each_and_intersected_in_order() {
        assert_eq!(scope_string(&["b", "a", "b"]), "b a");
        assert_eq!(scope_string::<&str>(&[]), "");
        assert_eq!(
            intersect_scopes("read write admin", "admin read"),
            "read admin"
        );
        assert_eq!(intersect_scopes("read", ""), "");
        assert_eq!(intersect_scopes("", "read"), "");
    }
}
