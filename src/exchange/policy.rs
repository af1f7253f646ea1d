//! The exchange policy file: TOML rows, one per (calling service, set of
//! audiences).
//!
//! ```toml
//! [[exchange]]
//! actor = "orders"          # the calling service client
//! from = ["gateway"]        # actors that may precede it when the subject is already delegated
//! targets = ["payments"]    # audiences it may obtain
//! scopes = ["read"]         # the most it may carry
//! max_ttl = "5m"            # longest lifetime of what it obtains (required)
//! max_depth = 2             # actors in the resulting chain (default 1)
//! ```
//!
//! Unknown keys are errors (a typo must not loosen or tighten a rule
//! silently), missing required keys too (`actor`, `targets`, `scopes`,
//! `max_ttl`: a half-written row must not take a default lifetime), and so
//! are two rows granting one actor the same audience: exactly one row
//! decides each (actor, audience).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokend_interceptor::token::MAX_CHAIN_DEPTH;

use crate::accounts::rules;

/// Longest `max_ttl` a row may give: a day (a derived token never outlives
/// its subject token anyway).
pub const MAX_TTL_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// Why a policy file cannot be used. Says where, never what a secret is
/// (the file holds none).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read (or is larger than a megabyte).
    #[error(transparent)]
    Read(#[from] tokend_interceptor::server::ReadError),
    /// The file is not UTF-8.
    #[error("{0}: not UTF-8 text")]
    NotText(PathBuf),
    /// Not TOML of the expected shape (the message has line and column).
    #[error("{0}")]
    Syntax(String),
    /// A row breaks a rule.
    #[error("row {row} (actor {actor:?}): {problem}")]
    Row {
        /// 1-based position of the `[[exchange]]` row.
        row: usize,
        /// Its actor.
        actor: String,
        /// What is wrong.
        problem: String,
    },
}

/// One row: what the service client `actor` may obtain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRule {
    /// The calling service client.
    pub actor: String,
    /// Actors that may precede it when the subject token is delegated
    /// already; empty: only the user's own tokens.
    pub from: Vec<String>,
    /// Audiences it may obtain tokens for.
    pub targets: Vec<String>,
    /// The most scopes a token it obtains may carry.
    pub scopes: Vec<String>,
    /// Longest lifetime of a token it obtains.
    pub max_ttl: Duration,
    /// Most actors in the chain of a token it obtains (itself included).
    pub max_depth: usize,
}

/// Every row of a policy file. The empty policy allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangePolicy {
    rules: Vec<ExchangeRule>,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    exchange: Vec<Row>,
}

/// A row as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    actor: String,
    #[serde(default)]
    from: Vec<String>,
    targets: Vec<String>,
    scopes: Vec<String>,
    max_ttl: String,
    max_depth: Option<usize>,
}

impl ExchangePolicy {
    /// Reads and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<ExchangePolicy, PolicyError> {
        let bytes = tokend_interceptor::server::read_bounded(path)?;
        let text = String::from_utf8(bytes).map_err(|_| PolicyError::NotText(path.to_owned()))?;
        ExchangePolicy::parse(&text)
    }

    /// Parses and checks a policy.
    pub fn parse(text: &str) -> Result<ExchangePolicy, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let mut rules = Vec::with_capacity(file.exchange.len());
        let mut granted: HashSet<(String, String)> = HashSet::new();
        for (index, row) in file.exchange.into_iter().enumerate() {
            let actor = row.actor.clone();
            let problem = |problem: String| PolicyError::Row {
                row: index + 1,
                actor: actor.clone(),
                problem,
            };
            let rule = checked(row).map_err(problem)?;
            for target in &rule.targets {
                if !granted.insert((rule.actor.clone(), target.clone())) {
                    return Err(problem(format!(
                        "another row already grants {target:?} to this actor; \
                         one row must decide each actor and audience"
                    )));
                }
            }
            rules.push(rule);
        }
        Ok(ExchangePolicy { rules })
    }

    /// The row that lets `actor` obtain tokens for `audience`, if any.
    pub fn rule(&self, actor: &str, audience: &str) -> Option<&ExchangeRule> {
        self.rules
            .iter()
            .find(|r| r.actor == actor && r.targets.iter().any(|t| t == audience))
    }

    /// Its rows, in file order.
    pub fn rules(&self) -> &[ExchangeRule] {
        &self.rules
    }

    /// How many rows it has.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether it allows nothing.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A row checked against the rules of names, scopes and limits.
fn checked(row: Row) -> Result<ExchangeRule, String> {
    if !rules::is_account_name(&row.actor) {
        return Err("actor is not a valid client id".into());
    }
    if row.targets.is_empty() {
        return Err("targets must name at least one audience".into());
    }
    if let Some(bad) = row.targets.iter().find(|t| !rules::is_account_name(t)) {
        return Err(format!("target {bad:?} is not a valid audience"));
    }
    if row.targets.contains(&row.actor) {
        return Err("an actor cannot obtain tokens for itself".into());
    }
    if row.scopes.is_empty() {
        return Err("scopes must name at least one scope".into());
    }
    if row.scopes.len() > rules::MAX_SCOPES {
        return Err(format!("at most {} scopes", rules::MAX_SCOPES));
    }
    if let Some(bad) = row.scopes.iter().find(|s| !rules::is_scope(s)) {
        return Err(format!("{bad:?} is not a valid scope"));
    }
    if let Some(bad) = row.from.iter().find(|a| !rules::is_account_name(a)) {
        return Err(format!("from: {bad:?} is not a valid client id"));
    }
    if row.from.contains(&row.actor) {
        return Err("from cannot name the actor itself (that is a loop)".into());
    }
    let max_ttl = humantime::parse_duration(&row.max_ttl)
        .map_err(|e| format!("max_ttl {:?}: {e}", row.max_ttl))?;
    if max_ttl.is_zero() || max_ttl > MAX_TTL_LIMIT {
        return Err(format!(
            "max_ttl must be more than 0 and at most {}",
            humantime::format_duration(MAX_TTL_LIMIT)
        ));
    }
    let max_depth = row.max_depth.unwrap_or(1);
    if max_depth == 0 || max_depth > MAX_CHAIN_DEPTH {
        return Err(format!("max_depth must be 1 to {MAX_CHAIN_DEPTH}"));
    }
    if !row.from.is_empty() && max_depth < 2 {
        return Err("from names predecessors, so max_depth must be at least 2".into());
    }
    Ok(ExchangeRule {
        actor: row.actor,
        from: row.from,
        targets: row.targets,
        scopes: row.scopes,
        max_ttl,
        max_depth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [[exchange]]
        actor = "orders"
        from = ["gateway"]
        targets = ["payments"]
        scopes = ["read"]
        max_ttl = "5m"
        max_depth = 2

        [[exchange]]
        actor = "gateway"
        targets = ["orders", "payments"]
        scopes = ["read", "write"]
        max_ttl = "1m"
    "#;

    #[test]
    fn the_example_parses_with_defaults_filled_in() {
        let policy = ExchangePolicy::parse(EXAMPLE).unwrap();
        assert_eq!(policy.len(), 2);
        let orders = policy.rule("orders", "payments").unwrap();
        assert_eq!(orders.from, ["gateway"]);
        assert_eq!(orders.max_ttl, Duration::from_secs(300));
        assert_eq!(orders.max_depth, 2);
        let gateway = policy.rule("gateway", "orders").unwrap();
        assert_eq!(gateway.max_ttl, Duration::from_secs(60));
        assert_eq!(gateway.max_depth, 1);
        assert!(policy.rule("orders", "gateway").is_none());
        assert!(policy.rule("payments", "orders").is_none());
        assert!(ExchangePolicy::parse("").unwrap().is_empty());
    }

    #[test]
    fn mistakes_are_refused_with_the_row_that_has_them() {
        let row = |extra: &str| format!("[[exchange]]\nactor = \"orders\"\n{extra}\n");
        let cases = [
            // A half-written row: no max_ttl.
            row("targets = [\"payments\"]\nscopes = [\"read\"]"),
            row("targets = [\"payments\"]"),
            row("targets = []\nscopes = [\"read\"]"),
            row("targets = [\"payments\"]\nscopes = []"),
            row("targets = [\"payments\"]\nscopes = [\"re ad\"]"),
            row("targets = [\"orders\"]\nscopes = [\"read\"]"),
            row("targets = [\"payments\"]\nscopes = [\"read\"]\nmax_ttl = \"0s\""),
            row("targets = [\"payments\"]\nscopes = [\"read\"]\nmax_ttl = \"1m\"\nmax_depth = 0"),
            row("targets = [\"payments\"]\nscopes = [\"read\"]\nmax_ttl = \"2d\""),
            row("targets = [\"payments\"]\nscopes = [\"read\"]\nmax_ttl = \"soon\""),
            row("targets = [\"payments\"]\nscopes = [\"read\"]\nmax_depth = 0"),
            row("targets = [\"payments\"]\nscopes = [\"read\"]\nmax_depth = 9"),
            row("targets = [\"payments\"]\nscopes = [\"read\"]\nfrom = [\"gateway\"]"),
            row(
                "targets = [\"payments\"]\nscopes = [\"read\"]\nfrom = [\"orders\"]\nmax_depth = 2",
            ),
            row("targets = [\"payments\"]\nscopes = [\"read\"]\ntarget = [\"x\"]"),
            "[[exchange]]\nactor = \"bad name!\"\ntargets = [\"a\"]\nscopes = [\"r\"]".into(),
            "[[exchanges]]\nactor = \"orders\"".into(),
            "[[exchange]\n".into(),
        ];
        for case in cases {
            assert!(ExchangePolicy::parse(&case).is_err(), "accepted:\n{case}");
        }
        let twice = format!(
            "{}{}",
            row("targets = [\"payments\"]\nscopes = [\"read\"]\nmax_ttl = \"1m\""),
            row("targets = [\"stock\", \"payments\"]\nscopes = [\"write\"]\nmax_ttl = \"1m\"")
        );
        let err = ExchangePolicy::parse(&twice).unwrap_err().to_string();
        assert!(err.starts_with("row 2 (actor \"orders\")"), "{err}");
        let syntax = ExchangePolicy::parse("[[exchange]\n")
            .unwrap_err()
            .to_string();
        assert!(syntax.contains("line 1"), "{syntax}");
    }
}
