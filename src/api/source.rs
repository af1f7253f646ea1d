//! Where a call comes from, for login throttling: the peer's IP address, or,
//! when the peer is a trusted proxy (`--trusted-proxy CIDR`), the client
//! address the proxies report in `x-forwarded-for`.
//!
//! IPv6 sources count by their /64 (one subscriber's usual allocation), so
//! an attacker cannot get a fresh source per attempt from their own prefix.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The proxies whose `x-forwarded-for` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts proxies in `nets`.
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The source of a call from `peer` carrying these `x-forwarded-for`
    /// values (in header order). Walks the forwarded chain from the nearest
    /// hop outwards and stops at the first address not of a trusted proxy:
    /// anything further left was written by the client and proves nothing.
    pub fn source(&self, peer: Option<IpAddr>, forwarded: &[&str]) -> String {
        let Some(mut client) = peer.map(|ip| ip.to_canonical()) else {
            return "unknown".to_owned();
        };
        if self.trusts(client) {
            let hops = forwarded
                .iter()
                .flat_map(|value| value.split(','))
                .map(str::trim)
                .rev();
            for hop in hops {
                let Some(ip) = parse_hop(hop) else {
                    // A proxy wrote something else: keep the proxy itself.
                    break;
                };
                client = ip;
                if !self.trusts(ip) {
                    break;
                }
            }
        }
        source_key(client)
    }
}

/// An address as proxies write it: bare, with a port, or IPv6 in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })
        .map(|ip: IpAddr| ip.to_canonical())
}

/// The throttling key of an address: IPv4 as is, IPv6 by its /64.
pub fn source_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_source() {
        let none = TrustedProxies::default();
        assert_eq!(none.source(ip("10.0.0.1"), &["6.6.6.6"]), "10.0.0.1");
        assert_eq!(none.source(None, &[]), "unknown");
        assert_eq!(none.source(ip("::ffff:10.0.0.1"), &[]), "10.0.0.1");
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_spoofed_hops_are_ignored() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            trusted.source(ip("10.0.0.1"), &["203.0.113.7"]),
            "203.0.113.7"
        );
        // The client prepended a lie; the proxy appended the truth.
        assert_eq!(
            trusted.source(ip("10.0.0.1"), &["1.1.1.1, 203.0.113.7"]),
            "203.0.113.7"
        );
        // Several trusted hops, several header values.
        assert_eq!(
            trusted.source(ip("10.0.0.1"), &["203.0.113.7", "10.0.0.9"]),
            "203.0.113.7"
        );
        // No header: the proxy itself.
        assert_eq!(trusted.source(ip("10.0.0.1"), &[]), "10.0.0.1");
        // Garbage from a proxy: the nearest trusted address.
        assert_eq!(trusted.source(ip("10.0.0.1"), &["garbage"]), "10.0.0.1");
        // Ports and brackets.
        assert_eq!(
            trusted.source(ip("10.0.0.1"), &["203.0.113.7:5555"]),
            "203.0.113.7"
        );
        assert_eq!(
            trusted.source(ip("10.0.0.1"), &["[2001:db8::1]"]),
            "2001:db8:0:0::/64"
        );
        // An untrusted peer's header is not believed.
        assert_eq!(
            trusted.source(ip("192.0.2.1"), &["203.0.113.7"]),
            "192.0.2.1"
        );
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        assert_eq!(
            source_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            source_key("2001:db8:1:2:bbbb::9".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }
}
