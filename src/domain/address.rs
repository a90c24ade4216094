use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// What a per-address budget counts: one IPv4 address, or one IPv6 /64 (a single customer usually
/// holds a whole /64, so counting single IPv6 addresses would give one attacker 2^64 budgets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressBucket(String);

impl AddressBucket {
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Self(v4.to_string()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(v4.to_string()),
                None => {
                    let [a, b, c, d, ..] = v6.segments();
                    Self(format!("{}/64", Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0)))
                }
            },
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AddressBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(text: &str) -> String {
        AddressBucket::of(text.parse().unwrap()).to_string()
    }

    #[test]
    fn ipv4_counts_per_address_and_ipv6_per_64() {
        assert_eq!(bucket("203.0.113.7"), "203.0.113.7");
        assert_eq!(bucket("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(bucket("2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::/64");
        assert_ne!(bucket("2001:db8:1:3::1"), "2001:db8:1:2::/64");
        assert_eq!(bucket("::ffff:198.51.100.4"), "198.51.100.4");
    }
}
