//! What the gate reads of an Envoy `CheckRequest`: the request's path and
//! method, whether it is a gRPC call, its `authorization` header, and the
//! downstream client's certificate when Envoy sends it
//! (`include_peer_certificate: true`).

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

/// Longest peer certificate (URL-encoded PEM) looked at, in bytes: a chain
/// of a few certificates is well under it.
pub const MAX_CERTIFICATE_TEXT: usize = 64 * 1024;

/// The parts of a checked request that decide it.
#[derive(Debug, Default)]
pub struct Checked<'a> {
    /// The path, without the query string or fragment.
    pub path: &'a str,
    /// The HTTP method (`POST` for gRPC).
    pub method: &'a str,
    /// Whether the client speaks gRPC (`content-type: application/grpc…`):
    /// its refusals must be gRPC statuses.
    pub grpc: bool,
    /// The `authorization` header's value(s): more than one is refused.
    pub authorization: Authorization<'a>,
    /// The downstream client's certificate as Envoy reports it (URL-encoded
    /// PEM), empty without one.
    pub certificate: &'a str,
}

/// The `authorization` header as Envoy passed it.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum Authorization<'a> {
    /// None sent.
    #[default]
    Absent,
    /// One value.
    One(&'a str),
    /// Several `authorization` headers (with `encode_raw_headers`), or a
    /// value that is not text.
    Unusable,
}

impl<'a> Checked<'a> {
    /// Reads `request`; a request without HTTP attributes reads as a path
    /// of "" (which no rule but `*` names).
    pub fn read(request: &'a CheckRequest) -> Checked<'a> {
        let attributes = request.attributes.as_ref();
        let certificate = attributes
            .and_then(|a| a.source.as_ref())
            .map(|peer| peer.certificate.as_str())
            .unwrap_or_default();
        let Some(http) = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
        else {
            return Checked {
                certificate,
                ..Checked::default()
            };
        };
        // `path` is the request target: cut the query and any fragment.
        let path = http.path.split(['?', '#']).next().unwrap_or_default();
        let grpc = header(http, "content-type").is_some_and(is_grpc_content_type);
        Checked {
            path,
            method: &http.method,
            grpc,
            authorization: authorization(http),
            certificate,
        }
    }
}

/// Whether `content-type` is gRPC's (`application/grpc`, `+proto`, …).
fn is_grpc_content_type(value: &str) -> bool {
    let value = value.trim_start();
    value
        .get(..16)
        .is_some_and(|head| head.eq_ignore_ascii_case("application/grpc"))
}

/// The single value of header `name` (lower case), from either encoding.
fn header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    if let Some(value) = http.headers.get(name) {
        return Some(value);
    }
    let map = http.header_map.as_ref()?;
    let value = map
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))?;
    std::str::from_utf8(&value.raw_value).ok()
}

fn authorization(http: &HttpRequest) -> Authorization<'_> {
    if let Some(value) = http.headers.get("authorization") {
        return Authorization::One(value);
    }
    let Some(map) = &http.header_map else {
        return Authorization::Absent;
    };
    let mut values = map
        .headers
        .iter()
        .filter(|h| h.key.eq_ignore_ascii_case("authorization"));
    match (values.next(), values.next()) {
        (None, _) => Authorization::Absent,
        (Some(one), None) => match std::str::from_utf8(&one.raw_value) {
            Ok(text) => Authorization::One(text),
            Err(_) => Authorization::Unusable,
        },
        (Some(_), Some(_)) => Authorization::Unusable,
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{Peer, Request};

    use super::*;

    fn check(http: HttpRequest, certificate: &str) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    certificate: certificate.into(),
                    ..Peer::default()
                }),
                request: Some(Request {
                    http: Some(http),
                    ..Request::default()
                }),
                ..AttributeContext::default()
            }),
        }
    }

    #[test]
    fn paths_lose_their_query_and_grpc_is_told_by_content_type() {
        let http = HttpRequest {
            method: "POST".into(),
            path: "/api/orders?id=1#top".into(),
            headers: [
                (
                    "content-type".to_owned(),
                    "application/grpc+proto".to_owned(),
                ),
                ("authorization".to_owned(), "Bearer x".to_owned()),
            ]
            .into(),
            ..HttpRequest::default()
        };
        let request = check(http, "cert");
        let checked = Checked::read(&request);
        assert_eq!(checked.path, "/api/orders");
        assert_eq!(checked.method, "POST");
        assert!(checked.grpc);
        assert_eq!(checked.authorization, Authorization::One("Bearer x"));
        assert_eq!(checked.certificate, "cert");
        for (value, grpc) in [
            ("application/grpc", true),
            ("Application/GRPC", true),
            ("application/json", false),
            ("application/grp", false),
            ("", false),
        ] {
            let http = HttpRequest {
                headers: [("content-type".to_owned(), value.to_owned())].into(),
                ..HttpRequest::default()
            };
            let request = check(http, "");
            assert_eq!(Checked::read(&request).grpc, grpc, "{value}");
        }
        let empty = CheckRequest::default();
        let checked = Checked::read(&empty);
        assert_eq!(
            (checked.path, checked.authorization),
            ("", Authorization::Absent)
        );
    }

    #[test]
    fn raw_headers_are_read_and_two_authorizations_are_unusable() {
        let raw = |pairs: &[(&str, &[u8])]| HttpRequest {
            header_map: Some(HeaderMap {
                headers: pairs
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: (*k).into(),
                        raw_value: v.to_vec(),
                        ..HeaderValue::default()
                    })
                    .collect(),
            }),
            ..HttpRequest::default()
        };
        let one = check(raw(&[("authorization", b"Bearer a")]), "");
        assert_eq!(
            Checked::read(&one).authorization,
            Authorization::One("Bearer a")
        );
        let two = check(
            raw(&[
                ("authorization", b"Bearer a"),
                ("Authorization", b"Bearer b"),
            ]),
            "",
        );
        assert_eq!(Checked::read(&two).authorization, Authorization::Unusable);
        let binary = check(raw(&[("authorization", b"Bearer \xff")]), "");
        assert_eq!(
            Checked::read(&binary).authorization,
            Authorization::Unusable
        );
        let grpc = check(raw(&[("content-type", b"application/grpc")]), "");
        assert!(Checked::read(&grpc).grpc);
    }
}
