//! How a [`Decision`] is told to Envoy: an allowed request goes upstream
//! with identity headers the service can trust (and any forged copies
//! removed); a refused one is answered by Envoy with what the client
//! understands: a gRPC status with the `ErrorInfo` reason for gRPC
//! clients, RFC 6750 `WWW-Authenticate` and a JSON body for HTTP ones.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode as HttpStatusCode};
use envoy_types::pb::google::rpc;
use tokend_interceptor::{Claims, Reason};
use tonic::{Code, Status};

use crate::decision::Decision;

/// The verified subject (`sub`).
pub const SUBJECT_HEADER: &str = "x-tokend-subject";
/// The granted scopes, space-separated.
pub const SCOPES_HEADER: &str = "x-tokend-scopes";
/// The session id (`sid`), for tokens of a session.
pub const SESSION_HEADER: &str = "x-tokend-session";
/// The actors of a delegated token, comma-separated, nearest (the service
/// presenting it) first.
pub const ACTOR_CHAIN_HEADER: &str = "x-tokend-actor-chain";

/// Every header the gate vouches for: never passed through from a client.
pub const IDENTITY_HEADERS: [&str; 4] = [
    SUBJECT_HEADER,
    SCOPES_HEADER,
    SESSION_HEADER,
    ACTOR_CHAIN_HEADER,
];

/// The `CheckResponse` for `decision`, for a gRPC client when `grpc`.
pub fn check_response(decision: Decision, grpc: bool) -> CheckResponse {
    match decision {
        Decision::Allow(claims) => match allowed(claims.as_deref()) {
            Ok(ok) => CheckResponse {
                status: Some(rpc::Status::default()),
                http_response: Some(HttpResponse::OkResponse(ok)),
                dynamic_metadata: None,
            },
            Err(status) => denied(&status, grpc),
        },
        Decision::Deny(status) => denied(&status, grpc),
    }
}

/// The identity headers of `claims` (none for a public path), every other
/// identity header removed.
fn allowed(claims: Option<&Claims>) -> Result<OkHttpResponse, Status> {
    let mut set: Vec<(&str, String)> = Vec::new();
    if let Some(claims) = claims {
        set.push((SUBJECT_HEADER, claims.sub().to_owned()));
        let scopes = claims.scopes().collect::<Vec<_>>().join(" ");
        set.push((SCOPES_HEADER, scopes));
        if let Some(sid) = claims.sid() {
            set.push((SESSION_HEADER, sid.to_owned()));
        }
        let actors = claims
            .actors()
            .map(|a| a.sub())
            .collect::<Vec<_>>()
            .join(",");
        set.push((ACTOR_CHAIN_HEADER, actors));
    }
    // Empty values are removed, not sent empty: the header's absence is
    // what "no scopes" or "not delegated" looks like.
    set.retain(|(_, value)| !value.is_empty());
    if let Some((name, _)) = set.iter().find(|(_, value)| !is_header_safe(value)) {
        return Err(Reason::AccessTokenInvalid
            .status(format!("the token's claims cannot be passed on as {name}")));
    }
    let headers = set
        .iter()
        .map(|(name, value)| overwrite(name, value))
        .collect();
    let headers_to_remove = IDENTITY_HEADERS
        .iter()
        .filter(|name| !set.iter().any(|(set, _)| set == *name))
        .map(|name| (*name).to_owned())
        .collect();
    Ok(OkHttpResponse {
        headers,
        headers_to_remove,
        ..OkHttpResponse::default()
    })
}

/// Visible ASCII and inner spaces: what any HTTP stack passes unchanged.
fn is_header_safe(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b)) && value.trim() == value
}

/// A request header set to `value`, replacing whatever the client sent.
fn overwrite(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: value.to_owned(),
            ..HeaderValue::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        ..HeaderValueOption::default()
    }
}

/// The HTTP status a refusal's gRPC code stands for.
pub fn http_status(code: Code) -> HttpStatusCode {
    match code {
        Code::Unauthenticated => HttpStatusCode::Unauthorized,
        Code::Unavailable => HttpStatusCode::ServiceUnavailable,
        Code::InvalidArgument => HttpStatusCode::BadRequest,
        _ => HttpStatusCode::Forbidden,
    }
}

/// The refusal Envoy sends the client.
fn denied(status: &Status, grpc: bool) -> CheckResponse {
    let code = http_status(status.code());
    let (headers, body) = if grpc {
        grpc_refusal(status)
    } else {
        http_refusal(status)
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: code.into() }),
            headers,
            body,
        })),
        dynamic_metadata: None,
    }
}

/// The headers tonic itself sends for `status` (`grpc-status`,
/// `grpc-message`, `grpc-status-details-bin`, `content-type`): the client
/// behind Envoy reads exactly what the interceptor's refusal carries.
fn grpc_refusal(status: &Status) -> (Vec<HeaderValueOption>, String) {
    let response = status.clone().into_http::<()>();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(name, value)| Some(overwrite(name.as_str(), value.to_str().ok()?)))
        .collect();
    (headers, status.message().to_owned())
}

/// RFC 6750's `WWW-Authenticate` and a small JSON body naming the reason.
fn http_refusal(status: &Status) -> (Vec<HeaderValueOption>, String) {
    let reason = Reason::of(status).map(Reason::as_str).unwrap_or("UNKNOWN");
    let message = status.message();
    let error = match status.code() {
        Code::Unauthenticated => Some("invalid_token"),
        Code::PermissionDenied => Some("insufficient_scope"),
        _ => None,
    };
    let mut headers = vec![
        overwrite("content-type", "application/json"),
        overwrite("cache-control", "no-store"),
    ];
    if let Some(error) = error {
        // Quoted strings: the message is ours and holds no quote or
        // backslash, but escape them all the same.
        let description = message.replace(['"', '\\'], "'");
        headers.push(overwrite(
            "www-authenticate",
            &format!(
                "Bearer realm=\"tokend\", error=\"{error}\", error_description=\"{description}\""
            ),
        ));
    } else {
        headers.push(overwrite("retry-after", "1"));
    }
    let body = serde_json::json!({
        "error": error.unwrap_or("temporarily_unavailable"),
        "reason": reason,
        "message": message,
    })
    .to_string();
    (headers, body)
}

#[cfg(test)]
mod tests {
    use tokend_interceptor::AuthError;
    use tokend_interceptor::token::Actor;

    use super::*;

    fn ok(response: &CheckResponse) -> &OkHttpResponse {
        match &response.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok,
            other => panic!("not allowed: {other:?}"),
        }
    }

    fn refusal(response: &CheckResponse) -> &DeniedHttpResponse {
        match &response.http_response {
            Some(HttpResponse::DeniedResponse(denied)) => denied,
            other => panic!("not denied: {other:?}"),
        }
    }

    fn header<'a>(headers: &'a [HeaderValueOption], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.as_str())
    }

    fn claims() -> Claims {
        Claims::new("tokend", "alice", "orders", "jti", 1, 2)
            .with_scope("read write")
            .with_session("s1")
    }

    #[test]
    fn allowed_requests_carry_the_identity_and_lose_forged_headers() {
        let response = check_response(Decision::Allow(Some(claims().into())), true);
        assert_eq!(response.status.as_ref().map(|s| s.code), Some(0));
        let allowed = ok(&response);
        assert_eq!(header(&allowed.headers, SUBJECT_HEADER), Some("alice"));
        assert_eq!(header(&allowed.headers, SCOPES_HEADER), Some("read write"));
        assert_eq!(header(&allowed.headers, SESSION_HEADER), Some("s1"));
        assert_eq!(allowed.headers_to_remove, [ACTOR_CHAIN_HEADER]);
        for h in &allowed.headers {
            assert_eq!(
                h.append_action,
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32
            );
        }
        let delegated =
            claims().with_actor(Actor::new("orders", None).with_previous(Actor::new("edge", None)));
        let response = check_response(Decision::Allow(Some(delegated.into())), false);
        assert_eq!(
            header(&ok(&response).headers, ACTOR_CHAIN_HEADER),
            Some("orders,edge")
        );
        // A public path: nothing vouched for, everything forged removed.
        let response = check_response(Decision::Allow(None), false);
        assert!(ok(&response).headers.is_empty());
        assert_eq!(ok(&response).headers_to_remove, IDENTITY_HEADERS);
    }

    #[test]
    fn claims_that_are_no_header_value_are_refused() {
        let odd = Claims::new(
            "tokend",
            "ali\r\nx-tokend-subject: root",
            "orders",
            "j",
            1,
            2,
        );
        let response = check_response(Decision::Allow(Some(odd.into())), false);
        assert_eq!(
            refusal(&response).status.as_ref().map(|s| s.code),
            Some(401)
        );
    }

    #[test]
    fn grpc_refusals_carry_the_status_and_its_details() {
        let status = Status::from(AuthError::Expired);
        let response = check_response(Decision::Deny(status), true);
        assert_eq!(
            response.status.as_ref().map(|s| s.code),
            Some(Code::Unauthenticated as i32)
        );
        let denied = refusal(&response);
        assert_eq!(denied.status.as_ref().map(|s| s.code), Some(401));
        assert_eq!(header(&denied.headers, "grpc-status"), Some("16"));
        assert_eq!(
            header(&denied.headers, "content-type"),
            Some("application/grpc")
        );
        assert!(header(&denied.headers, "grpc-message").is_some());
        let details = header(&denied.headers, "grpc-status-details-bin").expect("details");
        // The header tonic's client decodes back into the reason.
        let mut map = http::HeaderMap::new();
        map.insert("grpc-status", "16".parse().unwrap());
        map.insert("grpc-status-details-bin", details.parse().unwrap());
        let back = Status::from_header_map(&map).expect("a status");
        assert_eq!(Reason::of(&back), Some(Reason::AccessTokenExpired));
    }

    #[test]
    fn http_refusals_follow_rfc_6750() {
        let cases = [
            (
                AuthError::Missing,
                401,
                Some("invalid_token"),
                "ACCESS_TOKEN_MISSING",
            ),
            (
                AuthError::Revoked,
                401,
                Some("invalid_token"),
                "SESSION_REVOKED",
            ),
            (
                AuthError::InsufficientScope("admin".into()),
                403,
                Some("insufficient_scope"),
                "INSUFFICIENT_SCOPE",
            ),
            (
                AuthError::RevocationsStale,
                503,
                None,
                "REVOCATIONS_UNAVAILABLE",
            ),
        ];
        for (err, code, error, reason) in cases {
            let response = check_response(Decision::Deny(Status::from(err)), false);
            let denied = refusal(&response);
            assert_eq!(denied.status.as_ref().map(|s| s.code), Some(code));
            let challenge = header(&denied.headers, "www-authenticate");
            match error {
                Some(error) => {
                    let challenge = challenge.expect("a challenge");
                    assert!(challenge.starts_with("Bearer "), "{challenge}");
                    assert!(
                        challenge.contains(&format!("error=\"{error}\"")),
                        "{challenge}"
                    );
                }
                None => assert!(challenge.is_none()),
            }
            assert_eq!(
                header(&denied.headers, "content-type"),
                Some("application/json")
            );
            let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
            assert_eq!(body["reason"], reason);
        }
    }
}
