//! [`Policy`]: what each method of a server needs (nothing, a token with
//! some scopes, or a client certificate), by method path or whole service.

use std::collections::HashMap;

/// What a method needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// No token needed.
    Public,
    /// A valid token with all of these scopes (none: any valid token).
    Scopes(Vec<String>),
    /// A client certificate verified over mTLS, or else a valid token with
    /// all of these scopes.
    ClientCertOrScopes(Vec<String>),
}

/// Per-method rules for [`AuthLayer`], by full method path
/// (`/package.Service/Method`) or whole service (`package.Service`).
/// Methods without a rule need a valid token: nothing is public by accident.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    methods: HashMap<String, Rule>,
    services: HashMap<String, Rule>,
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

    /// The rule for a request path.
    pub fn rule(&self, path: &str) -> &Rule {
        static AUTHENTICATED: Rule = Rule::Scopes(Vec::new());
        if let Some(rule) = self.methods.get(path) {
            return rule;
        }
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map(|(service, _)| service);
        service
            .and_then(|s| self.services.get(s))
            .unwrap_or(&AUTHENTICATED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
