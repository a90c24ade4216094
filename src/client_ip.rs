//! The address a request comes from, believing `X-Forwarded-For` only from configured proxies.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The socket peer, unless the peer is a trusted proxy: then the right-most `X-Forwarded-For` entry
/// that is not itself a trusted proxy (entries further left were written by the client and prove nothing).
pub fn client_ip(req: &HttpRequest, trusted_proxies: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !is_trusted(peer, trusted_proxies) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    forwarded.into_iter().rev().find(|addr| !is_trusted(*addr, trusted_proxies)).or(Some(peer))
}

fn is_trusted(addr: IpAddr, trusted_proxies: &[IpNet]) -> bool {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    trusted_proxies.iter().any(|net| net.contains(&addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn request(peer: &str, xff: Option<&str>) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr(peer.parse().unwrap());
        if let Some(value) = xff {
            req = req.insert_header(("X-Forwarded-For", value));
        }
        req.to_http_request()
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let req = request("203.0.113.9:1234", Some("198.51.100.1"));
        assert_eq!(client_ip(&req, &[]), Some("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn a_trusted_proxy_hands_over_the_right_most_untrusted_address() {
        let proxies = vec!["10.0.0.0/8".parse().unwrap()];
        let req = request("10.0.0.2:1234", Some("6.6.6.6, 198.51.100.1, 10.0.0.3"));
        assert_eq!(client_ip(&req, &proxies), Some("198.51.100.1".parse().unwrap()));
    }
}
