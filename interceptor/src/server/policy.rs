//! [`Policy`]: what each method of a server needs (nothing, a token with
//! some scopes, or a client certificate), by method path or whole service,
//! and which delegated tokens (RFC 8693 actor chains) it takes.

use std::collections::HashMap;

use crate::error::AuthError;
use crate::token::Claims;

/// What a method needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// No token needed.
    Public,
    /// A valid token with all of these scopes (none: any valid token).
    Scopes(Vec<String>),
    /// A client certificate verified over mTLS, or else a valid token with
    /// all of these scopes. A token sent along with a certificate is still
    /// verified (and its claims attached), but needs no scope.
    ClientCertOrScopes(Vec<String>),
}

/// Which delegated tokens a method takes: see [`Policy::forbid_delegated`],
/// [`Policy::require_actor`] and [`Policy::max_chain_depth`]. Decisions
/// use the outermost actor (the service that obtained the token and
/// presents it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delegation {
    /// Only the subject's own tokens.
    forbid: bool,
    /// Only tokens delegated to one of these actors.
    actors: Option<Vec<String>>,
    /// At most this many actors in the chain.
    max_depth: Option<usize>,
}

impl Delegation {
    /// Takes every token (a `const` for static defaults).
    pub const UNRESTRICTED: Delegation = Delegation {
        forbid: false,
        actors: None,
        max_depth: None,
    };

    /// Takes every token: the subject's own and delegated ones.
    pub fn new() -> Delegation {
        Delegation::default()
    }

    /// Takes only the subject's own tokens (no `act` claim).
    pub fn forbid_delegated(mut self) -> Delegation {
        self.forbid = true;
        self
    }

    /// Takes only tokens delegated to one of `actors` (service-client ids,
    /// matched against the outermost actor).
    pub fn require_actor<I, S>(mut self, actors: I) -> Delegation
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.actors = Some(actors.into_iter().map(Into::into).collect());
        self
    }

    /// Takes delegation chains of at most `depth` actors.
    pub fn max_chain_depth(mut self, depth: usize) -> Delegation {
        self.max_depth = Some(depth);
        self
    }

    /// Whether it takes every token (no rule set).
    pub fn is_unrestricted(&self) -> bool {
        *self == Delegation::default()
    }

    /// Refuses `claims` unless this rule takes its actor chain
    /// ([`AuthError::ChainNotAllowed`]).
    pub fn check(&self, claims: &Claims) -> Result<(), AuthError> {
        let depth = claims.chain_depth();
        if self.forbid && depth > 0 {
            return Err(AuthError::ChainNotAllowed(
                "this method takes only the subject's own token, not a delegated one".into(),
            ));
        }
        if let Some(max) = self.max_depth
            && depth > max
        {
            return Err(AuthError::ChainNotAllowed(format!(
                "this method takes delegation chains of at most {max} actors"
            )));
        }
        if let Some(actors) = &self.actors {
            let allowed = claims
                .outermost_actor()
                .is_some_and(|actor| actors.iter().any(|a| a == actor));
            if !allowed {
                return Err(AuthError::ChainNotAllowed(
                    "this method takes only tokens delegated to certain services".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Per-method rules for [`AuthLayer`](super::AuthLayer), by full method path
/// (`/package.Service/Method`) or whole service (`package.Service`).
/// Methods without a rule need a valid token: nothing is public by accident.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    methods: HashMap<String, Rule>,
    services: HashMap<String, Rule>,
    delegation: HashMap<String, Delegation>,
}

impl Policy {
    /// Every method needs a valid token.
    pub fn new() -> Policy {
        Policy::default()
    }

    /// `path` (`/package.Service/Method`) needs no token.
    pub fn public(mut self, path: impl Into<String>) -> Policy {
        self.methods.insert(path.into(), Rule::Public);
        self
    }

    /// Every method of `service` (`package.Service`) needs no token.
    pub fn public_service(mut self, service: impl Into<String>) -> Policy {
        self.services.insert(service.into(), Rule::Public);
        self
    }

    /// Health checks and server reflection (v1 and v1alpha) need no token.
    pub fn public_health_and_reflection(self) -> Policy {
        self.public_service("grpc.health.v1.Health")
            .public_service("grpc.reflection.v1.ServerReflection")
            .public_service("grpc.reflection.v1alpha.ServerReflection")
    }

    /// `path` needs a valid token with all of `scopes`.
    pub fn require_scopes<I, S>(mut self, path: impl Into<String>, scopes: I) -> Policy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes = scopes.into_iter().map(Into::into).collect();
        self.methods.insert(path.into(), Rule::Scopes(scopes));
        self
    }

    /// `path` is open to callers with a verified client certificate (mTLS),
    /// and otherwise needs a valid token with all of `scopes`.
    pub fn client_cert_or_scopes<I, S>(mut self, path: impl Into<String>, scopes: I) -> Policy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes = scopes.into_iter().map(Into::into).collect();
        self.methods
            .insert(path.into(), Rule::ClientCertOrScopes(scopes));
        self
    }

    /// `path` refuses delegated tokens (those with an `act` claim) with
    /// `CHAIN_NOT_ALLOWED`: only the subject's own token will do. Like the
    /// other delegation rules, `path` is a method (`/package.Service/Method`)
    /// or a whole service (`package.Service`; a method's own rule wins).
    pub fn forbid_delegated(mut self, path: impl Into<String>) -> Policy {
        self.delegation.entry(path.into()).or_default().forbid = true;
        self
    }

    /// `path` takes only tokens delegated to one of `actors` (service-client
    /// ids, matched against the outermost actor); the subject's own tokens
    /// and other actors' get `CHAIN_NOT_ALLOWED`.
    pub fn require_actor<I, S>(mut self, path: impl Into<String>, actors: I) -> Policy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let actors = actors.into_iter().map(Into::into).collect();
        self.delegation.entry(path.into()).or_default().actors = Some(actors);
        self
    }

    /// `path` takes delegated tokens of at most `depth` actors (0: like
    /// [`forbid_delegated`](Self::forbid_delegated)); longer chains get
    /// `CHAIN_NOT_ALLOWED`.
    pub fn max_chain_depth(mut self, path: impl Into<String>, depth: usize) -> Policy {
        self.delegation.entry(path.into()).or_default().max_depth = Some(depth);
        self
    }

    /// The delegation rule of `path` (a method path), if it has one: its
    /// own, else its service's (rules given for `package.Service`).
    pub fn delegation(&self, path: &str) -> Option<&Delegation> {
        self.delegation
            .get(path)
            .or_else(|| service_of(path).and_then(|s| self.delegation.get(s)))
    }

    /// The rule for a request path.
    pub fn rule(&self, path: &str) -> &Rule {
        static AUTHENTICATED: Rule = Rule::Scopes(Vec::new());
        if let Some(rule) = self.methods.get(path) {
            return rule;
        }
        service_of(path)
            .and_then(|s| self.services.get(s))
            .unwrap_or(&AUTHENTICATED)
    }
}

/// The service of a method path: `package.Service` of `/package.Service/Method`.
fn service_of(path: &str) -> Option<&str> {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map(|(service, _)| service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Actor;

    fn delegated(actors: &[&str]) -> Claims {
        let mut claims = crate::test_support::claims();
        claims.act = actors.iter().rev().fold(None, |inner, sub| {
            Some(Actor {
                sub: (*sub).to_owned(),
                av: None,
                act: inner.map(Box::new),
            })
        });
        claims
    }

    #[test]
    fn delegation_rules_judge_the_outermost_actor_and_the_depth() {
        const M: &str = "/demo.v1.EchoService/Echo";
        let policy = Policy::new()
            .forbid_delegated("/demo.v1.EchoService/Own")
            .require_actor(M, ["orders"])
            .max_chain_depth(M, 2);
        let own = policy.delegation("/demo.v1.EchoService/Own").unwrap();
        assert_eq!(own.check(&delegated(&[])), Ok(()));
        assert!(matches!(
            own.check(&delegated(&["orders"])),
            Err(AuthError::ChainNotAllowed(_))
        ));
        let rule = policy.delegation(M).unwrap();
        assert_eq!(rule.check(&delegated(&["orders"])), Ok(()));
        assert_eq!(rule.check(&delegated(&["orders", "gateway"])), Ok(()));
        for refused in [
            &[][..],
            &["gateway"],
            &["gateway", "orders"],
            &["orders", "gateway", "edge"],
        ] {
            assert!(
                matches!(
                    rule.check(&delegated(refused)),
                    Err(AuthError::ChainNotAllowed(_))
                ),
                "{refused:?}"
            );
        }
        assert!(policy.delegation("/demo.v1.EchoService/Other").is_none());
        // A whole service's rule covers its methods; a method's own wins.
        let policy = Policy::new()
            .forbid_delegated("demo.v1.EchoService")
            .max_chain_depth("/demo.v1.EchoService/Echo", 1);
        let any = policy.delegation("/demo.v1.EchoService/Other").unwrap();
        assert!(any.check(&delegated(&["orders"])).is_err());
        let echo = policy.delegation("/demo.v1.EchoService/Echo").unwrap();
        assert_eq!(echo.check(&delegated(&["orders"])), Ok(()));
        assert!(policy.delegation("/other.v1.Service/Echo").is_none());
    }

    #[test]
    fn policies_fall_back_from_method_to_service_to_authenticated() {
        let policy = Policy::new()
            .public("/demo.v1.EchoService/Ping")
            .require_scopes("/demo.v1.EchoService/AdminEcho", ["admin"])
            .public_health_and_reflection();
        assert_eq!(policy.rule("/demo.v1.EchoService/Ping"), &Rule::Public);
        assert_eq!(
            policy.rule("/demo.v1.EchoService/AdminEcho"),
            &Rule::Scopes(vec!["admin".into()])
        );
        assert_eq!(
            policy.rule("/demo.v1.EchoService/Echo"),
            &Rule::Scopes(vec![])
        );
        assert_eq!(policy.rule("/grpc.health.v1.Health/Check"), &Rule::Public);
        assert_eq!(policy.rule("garbage"), &Rule::Scopes(vec![]));
        assert_eq!(
            policy.rule("/demo.v1.EchoServiceX/Ping"),
            &Rule::Scopes(vec![])
        );
    }
}
