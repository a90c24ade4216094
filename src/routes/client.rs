//! The address a request comes from, believing `X-Forwarded-For` only from configured proxies.

use std::net::{IpAddr, SocketAddr};

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The socket peer, unless it is a trusted proxy: then `X-Forwarded-For` is walked from the right
/// (entries further left were written by whoever the proxy talked to, and prove nothing), and the
/// first entry that is not a trusted proxy is the client. `ip:port` and `[v6]:port` entries count
/// as their address. An entry that does not parse stops the walk, and the last trusted hop is the
/// client: skipping it would let a client choose its address by sending garbage after a forgery.
/// When every entry is trusted, the left-most is the client.
pub fn client_ip(req: &HttpRequest, trusted_proxies: &[IpNet]) -> Option<IpAddr> {
    let peer = unmap(req.peer_addr()?.ip());
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .flat_map(|value| value.to_str().map(|text| text.split(',').collect()).unwrap_or_else(|_| vec![""]))
        .collect();
    Some(walk(peer, &forwarded, trusted_proxies))
}

fn walk(peer: IpAddr, forwarded: &[&str], trusted_proxies: &[IpNet]) -> IpAddr {
    let mut hop = peer;
    if !is_trusted(hop, trusted_proxies) {
        return hop;
    }
    for entry in forwarded.iter().rev() {
        let Some(addr) = parse_entry(entry) else { return hop };
        hop = addr;
        if !is_trusted(hop, trusted_proxies) {
            return hop;
        }
    }
    hop
}

/// `198.51.100.7`, `198.51.100.7:4711`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))
        .map(unmap)
}

/// `::ffff:198.51.100.7` is 198.51.100.7.
fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn is_trusted(addr: IpAddr, trusted_proxies: &[IpNet]) -> bool {
    let addr = unmap(addr);
    trusted_proxies.iter().any(|net| net.contains(&addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn request(peer: &str, xff: &[&str]) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr(peer.parse().unwrap());
        for value in xff {
            req = req.append_header(("X-Forwarded-For", *value));
        }
        req.to_http_request()
    }

    fn client(peer: &str, xff: &[&str], proxies: &[&str]) -> String {
        let proxies: Vec<IpNet> =
            proxies.iter().map(|p| p.parse().unwrap_or_else(|_| IpNet::from(p.parse::<IpAddr>().unwrap()))).collect();
        client_ip(&request(peer, xff), &proxies).unwrap().to_string()
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        assert_eq!(client("203.0.113.9:1234", &["198.51.100.1"], &[]), "203.0.113.9");
    }

    #[test]
    fn a_trusted_proxy_hands_over_the_right_most_untrusted_address() {
        assert_eq!(client("10.0.0.2:1234", &["6.6.6.6, 198.51.100.1, 10.0.0.3"], &["10.0.0.0/8"]), "198.51.100.1");
    }

    #[test]
    fn entries_with_ports_count_as_their_address() {
        let proxies = &["127.0.0.1"];
        assert_eq!(client("127.0.0.1:9", &["6.6.6.6, 203.0.113.77:4711"], proxies), "203.0.113.77");
        assert_eq!(client("127.0.0.1:9", &["6.6.6.6, [2001:db8::7]:4711"], proxies), "2001:db8::7");
        assert_eq!(client("127.0.0.1:9", &["6.6.6.6, [2001:db8::7]"], proxies), "2001:db8::7");
        assert_eq!(client("127.0.0.1:9", &["6.6.6.6, 2001:db8::7"], proxies), "2001:db8::7");
    }

    #[test]
    fn an_entry_that_does_not_parse_stops_the_walk_at_the_last_trusted_hop() {
        let proxies = &["127.0.0.1", "10.0.0.0/8"];
        assert_eq!(client("127.0.0.1:9", &["6.6.6.6, garbage"], proxies), "127.0.0.1");
        assert_eq!(client("127.0.0.1:9", &["6.6.6.6, unknown, 10.0.0.5"], proxies), "10.0.0.5");
        assert_eq!(client("127.0.0.1:9", &["6.6.6.6,, 10.0.0.5"], proxies), "10.0.0.5");
    }

    #[test]
    fn several_headers_are_one_list_in_order_and_cidrs_are_trusted() {
        let proxies = &["10.0.0.0/8"];
        assert_eq!(client("10.1.2.3:9", &["6.6.6.6", "198.51.100.1, 10.9.9.9"], proxies), "198.51.100.1");
        assert_eq!(client("10.1.2.3:9", &["10.0.0.1", "10.0.0.2"], proxies), "10.0.0.1", "all trusted: the left-most");
    }

    #[test]
    fn ipv4_mapped_peers_and_entries_are_ipv4() {
        assert_eq!(client("[::ffff:127.0.0.1]:9", &["::ffff:198.51.100.2"], &["127.0.0.1"]), "198.51.100.2");
    }
}
