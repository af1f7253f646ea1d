//! The gate's policy file: which request paths (and HTTP methods) need
//! what, read from TOML, checked before it is used, and matched to each
//! request with the most specific rule first.
//!
//! ```toml
//! audience = "orders"          # overrides --audience when set
//! default = "deny"             # or "allow-authenticated"
//!
//! [[rule]]
//! path = "/demo.v1.EchoService/Echo"   # exact, or a prefix ending in "*"
//! scopes = ["read"]
//! [[rule]]
//! path = "/grpc.health.v1.Health/*"
//! public = true
//! [[rule]]
//! path = "/api/*"
//! methods = ["GET"]
//! scopes = ["read"]
//! ```
//!
//! What a rule requires of a token is decided by the interceptor's own
//! checks ([`Claims::require_scopes`](tokend_interceptor::Claims::require_scopes),
//! [`Delegation`]): the gate only chooses the rule.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use tokend_interceptor::server::{Delegation, read_bounded};

/// Most rules a policy may hold: a policy is configuration, and matching
/// walks the prefix rules.
pub const MAX_RULES: usize = 10_000;

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// It could not be read.
    #[error(transparent)]
    Read(#[from] tokend_interceptor::server::ReadError),
    /// It is not TOML of the policy's shape.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What the TOML parser says (line and column included).
        message: String,
    },
    /// A rule makes no sense, or contradicts another.
    #[error("{path}: rule {index} ({rule_path:?}): {problem}")]
    Rule {
        /// The file.
        path: String,
        /// The rule's position, from 1.
        index: usize,
        /// Its `path`.
        rule_path: String,
        /// What is wrong.
        problem: String,
    },
    /// Something outside the rules is wrong.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

/// What a request no rule names gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// Refused with `PATH_NOT_ALLOWED` (PERMISSION_DENIED / 403): nothing is
    /// open by accident.
    #[default]
    Deny,
    /// Any valid access token passes.
    AllowAuthenticated,
}

/// What the matching rule asks of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// No token needed (and any sent is not looked at).
    Public,
    /// A valid token with every one of these scopes (none: any valid token),
    /// whose actor chain the delegation rule takes.
    Token {
        /// All required.
        scopes: Vec<String>,
        /// Which delegated tokens pass.
        delegation: Delegation,
    },
    /// No rule names the path and the default is `deny`.
    Denied,
}

/// One `[[rule]]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// The HTTP methods it covers, upper case; `None`: every method.
    methods: Option<Vec<String>>,
    access: Access,
}

impl Rule {
    fn covers(&self, method: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|methods| methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }
}

/// The rules of one path, those naming methods first (they are more
/// specific than a rule for every method of the same path).
type Rules = Vec<Rule>;

/// A checked policy, ready to match requests.
#[derive(Debug, Clone)]
pub struct Policy {
    audience: Option<String>,
    fallback: Fallback,
    exact: HashMap<String, Rules>,
    /// Prefix rules, the longest prefix first.
    prefixes: Vec<(String, Rules)>,
    rules: usize,
}

impl Default for Policy {
    /// No rules, default `deny`: every request is refused.
    fn default() -> Policy {
        Policy {
            audience: None,
            fallback: Fallback::Deny,
            exact: HashMap::new(),
            prefixes: Vec::new(),
            rules: 0,
        }
    }
}

/// The file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    audience: Option<String>,
    #[serde(default)]
    default: Fallback,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    path: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    public: bool,
    methods: Option<Vec<String>>,
    #[serde(default)]
    forbid_delegated: bool,
    require_actor: Option<Vec<String>>,
    max_chain_depth: Option<usize>,
}

impl Policy {
    /// Reads and checks the policy at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let bytes = read_bounded(path)?;
        let shown = path.display().to_string();
        let text = std::str::from_utf8(&bytes).map_err(|_| PolicyError::Invalid {
            path: shown.clone(),
            problem: "not UTF-8 text".into(),
        })?;
        Policy::parse(text, &shown)
    }

    /// Checks the policy `text` (from the file named `shown`, for messages).
    pub fn parse(text: &str, shown: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            path: shown.to_owned(),
            message: e.to_string(),
        })?;
        if file.rules.len() > MAX_RULES {
            return Err(PolicyError::Invalid {
                path: shown.to_owned(),
                problem: format!(
                    "{} rules, more than the {MAX_RULES} allowed",
                    file.rules.len()
                ),
            });
        }
        if let Some(audience) = &file.audience
            && (audience.is_empty() || audience.chars().any(char::is_control))
        {
            return Err(PolicyError::Invalid {
                path: shown.to_owned(),
                problem: "audience must be a non-empty name".into(),
            });
        }
        let mut policy = Policy {
            audience: file.audience,
            fallback: file.default,
            rules: file.rules.len(),
            ..Policy::default()
        };
        let mut prefixes: HashMap<String, Rules> = HashMap::new();
        for (index, raw) in file.rules.into_iter().enumerate() {
            let problem = |problem: String| PolicyError::Rule {
                path: shown.to_owned(),
                index: index + 1,
                rule_path: raw.path.clone(),
                problem,
            };
            let rule = check_rule(&raw).map_err(problem)?;
            let (table, key) = match raw.path.strip_suffix('*') {
                Some(prefix) => (&mut prefixes, prefix.to_owned()),
                None => (&mut policy.exact, raw.path.clone()),
            };
            let rules = table.entry(key).or_default();
            if let Some(other) = rules.iter().find(|r| overlap(r, &rule)) {
                return Err(problem(format!(
                    "covers the same path and methods as an earlier rule ({})",
                    methods_text(other)
                )));
            }
            rules.push(rule);
            // Rules naming methods before the rule for every method.
            rules.sort_by_key(|r| r.methods.is_none());
        }
        policy.prefixes = prefixes.into_iter().collect();
        policy
            .prefixes
            .sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Ok(policy)
    }

    /// The audience tokens must carry, if the policy sets one.
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    /// How many rules it holds.
    pub fn len(&self) -> usize {
        self.rules
    }

    /// Whether it holds no rule.
    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// What a request for `path` (without its query) with HTTP `method`
    /// needs: the most specific rule's access (exact path over prefix,
    /// longer prefix first, a rule naming the method over one for every
    /// method), else the default.
    pub fn access(&self, path: &str, method: &str) -> &Access {
        static AUTHENTICATED: Access = Access::Token {
            scopes: Vec::new(),
            delegation: Delegation::UNRESTRICTED,
        };
        static DENIED: Access = Access::Denied;
        let exact = self.exact.get(path).into_iter();
        let prefixes = self
            .prefixes
            .iter()
            .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, rules)| rules);
        for rules in exact.chain(prefixes) {
            if let Some(rule) = rules.iter().find(|r| r.covers(method)) {
                return &rule.access;
            }
        }
        match self.fallback {
            Fallback::Deny => &DENIED,
            Fallback::AllowAuthenticated => &AUTHENTICATED,
        }
    }
}

/// A rule from the file, or why it cannot be one.
fn check_rule(raw: &RuleFile) -> Result<Rule, String> {
    let path = raw.path.as_str();
    if path != "*" && !path.starts_with('/') {
        return Err("path must start with \"/\" (or be \"*\" for every path)".into());
    }
    if path.trim_end_matches('*').contains('*') || path.ends_with("**") {
        return Err("\"*\" may only end a path (a prefix)".into());
    }
    if path.contains('?') || path.chars().any(|c| c.is_control() || c == ' ') {
        return Err("a path has no query, space or control character".into());
    }
    let methods = match &raw.methods {
        None => None,
        Some(methods) if methods.is_empty() => {
            return Err("methods = [] covers nothing: leave it out for every method".into());
        }
        Some(methods) => {
            let mut upper = Vec::with_capacity(methods.len());
            for method in methods {
                if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(format!("{method:?} is not an HTTP method"));
                }
                upper.push(method.to_ascii_uppercase());
            }
            Some(upper)
        }
    };
    let restricted =
        raw.forbid_delegated || raw.require_actor.is_some() || raw.max_chain_depth.is_some();
    if raw.public {
        if !raw.scopes.is_empty() || restricted {
            return Err(
                "a public rule needs no token, so it takes no scopes or delegation rules".into(),
            );
        }
        return Ok(Rule {
            methods,
            access: Access::Public,
        });
    }
    if let Some(scope) = raw
        .scopes
        .iter()
        .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(format!("{scope:?} is not a scope"));
    }
    let mut delegation = Delegation::new();
    if raw.forbid_delegated {
        delegation = delegation.forbid_delegated();
    }
    if let Some(actors) = &raw.require_actor {
        if actors.is_empty() {
            return Err("require_actor = [] takes no token at all: name the actors".into());
        }
        delegation = delegation.require_actor(actors.iter().cloned());
    }
    if let Some(depth) = raw.max_chain_depth {
        delegation = delegation.max_chain_depth(depth);
    }
    Ok(Rule {
        methods,
        access: Access::Token {
            scopes: raw.scopes.clone(),
            delegation,
        },
    })
}

/// Whether two rules of the same path would both decide some request.
fn overlap(a: &Rule, b: &Rule) -> bool {
    match (&a.methods, &b.methods) {
        (None, None) => true,
        (Some(_), None) | (None, Some(_)) => false,
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
    }
}

fn methods_text(rule: &Rule) -> String {
    match &rule.methods {
        None => "every method".into(),
        Some(methods) => format!("methods {}", methods.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
audience = "orders"
default = "deny"

[[rule]]
path = "/demo.v1.EchoService/Echo"
scopes = ["read"]
[[rule]]
path = "/demo.v1.EchoService/AdminEcho"
scopes = ["admin"]
forbid_delegated = true
[[rule]]
path = "/grpc.health.v1.Health/*"
public = true
[[rule]]
path = "/api/*"
methods = ["GET"]
scopes = ["read"]
[[rule]]
path = "/api/*"
scopes = ["write"]
[[rule]]
path = "/api/public/*"
public = true
[[rule]]
path = "/demo.v1.EchoService/*"
"#;

    fn scopes(access: &Access) -> Vec<String> {
        match access {
            Access::Token { scopes, .. } => scopes.clone(),
            other => panic!("not a token rule: {other:?}"),
        }
    }

    #[test]
    fn the_most_specific_rule_decides() {
        let policy = Policy::parse(EXAMPLE, "policy.toml").unwrap();
        assert_eq!(policy.audience(), Some("orders"));
        assert_eq!(policy.len(), 7);
        // Exact over prefix.
        assert_eq!(
            scopes(policy.access("/demo.v1.EchoService/Echo", "POST")),
            ["read"]
        );
        // The prefix catches the rest of the service.
        assert!(scopes(policy.access("/demo.v1.EchoService/Ping", "POST")).is_empty());
        assert_eq!(
            policy.access("/grpc.health.v1.Health/Check", "POST"),
            &Access::Public
        );
        // A rule naming the method over the one for every method.
        assert_eq!(scopes(policy.access("/api/orders", "GET")), ["read"]);
        assert_eq!(scopes(policy.access("/api/orders", "get")), ["read"]);
        assert_eq!(scopes(policy.access("/api/orders", "DELETE")), ["write"]);
        // The longer prefix first.
        assert_eq!(policy.access("/api/public/x", "POST"), &Access::Public);
        // Nothing else is open.
        for path in [
            "/other",
            "/",
            "",
            "/demo.v1.EchoServiceX/Echo",
            "/grpc.health.v1.Health",
        ] {
            assert_eq!(policy.access(path, "GET"), &Access::Denied, "{path}");
        }
        match policy.access("/demo.v1.EchoService/AdminEcho", "POST") {
            Access::Token { delegation, .. } => assert!(!delegation.is_unrestricted()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn allow_authenticated_opens_unnamed_paths_to_any_valid_token() {
        let policy = Policy::parse("default = \"allow-authenticated\"", "p").unwrap();
        assert!(policy.is_empty());
        assert!(scopes(policy.access("/anything", "GET")).is_empty());
        assert_eq!(Policy::default().access("/x", "GET"), &Access::Denied);
    }

    #[test]
    fn broken_policies_are_refused_with_the_reason() {
        let cases = [
            ("default = \"allow\"", "unknown variant"),
            ("[[rule]]\npath = \"/a\"\nscope = [\"x\"]", "unknown field"),
            ("[[rule]]\npath = \"a\"", "must start with"),
            ("[[rule]]\npath = \"/a*b\"", "may only end"),
            (
                "[[rule]]\npath = \"/a\"\npublic = true\nscopes = [\"x\"]",
                "public rule",
            ),
            (
                "[[rule]]\npath = \"/a\"\npublic = true\nforbid_delegated = true",
                "public rule",
            ),
            ("[[rule]]\npath = \"/a\"\nmethods = []", "covers nothing"),
            (
                "[[rule]]\npath = \"/a\"\nmethods = [\"G T\"]",
                "not an HTTP method",
            ),
            ("[[rule]]\npath = \"/a\"\nscopes = [\"a b\"]", "not a scope"),
            (
                "[[rule]]\npath = \"/a\"\nrequire_actor = []",
                "name the actors",
            ),
            (
                "[[rule]]\npath = \"/a\"\n[[rule]]\npath = \"/a\"\npublic = true",
                "same path",
            ),
            (
                "[[rule]]\npath = \"/a\"\nmethods=[\"GET\",\"PUT\"]\n[[rule]]\npath = \"/a\"\nmethods=[\"put\"]",
                "same path",
            ),
            ("audience = \"\"", "audience"),
            ("[[rule]]\npath = \"/a?x=1\"", "no query"),
            ("not toml at all", "policy.toml"),
        ];
        for (text, expected) in cases {
            let err = Policy::parse(text, "policy.toml").unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        // Rules of one path with different methods are fine.
        Policy::parse(
            "[[rule]]\npath = \"/a\"\nmethods=[\"GET\"]\n[[rule]]\npath = \"/a\"\nmethods=[\"POST\"]",
            "p",
        )
        .unwrap();
    }

    #[test]
    fn a_policy_file_is_read_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.toml");
        std::fs::write(&path, vec![b'#'; 2 * 1024 * 1024]).unwrap();
        assert!(matches!(Policy::load(&path), Err(PolicyError::Read(_))));
        assert!(matches!(
            Policy::load(&dir.path().join("missing.toml")),
            Err(PolicyError::Read(_))
        ));
        let many = "[[rule]]\npath = \"/x\"\n".repeat(MAX_RULES + 1);
        assert!(
            Policy::parse(&many, "p")
                .unwrap_err()
                .to_string()
                .contains("rules")
        );
    }
}
