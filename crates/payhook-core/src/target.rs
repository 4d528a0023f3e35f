//! The SSRF guard's rules: which addresses and URLs a callback or status source may reach.
//!
//! Two places apply them. The dispatcher checks resolved addresses (never host names) and
//! connects to exactly the address that passed (`payhook-dispatch`'s sender), so DNS
//! rebinding cannot slip past. The API checks a URL's literal host when it is registered
//! ([`TargetPolicy::url_refusal`]), so a URL that can never be delivered to is refused at the
//! door instead of failing at every attempt.
//! Forbidden ranges are one table ([`FORBIDDEN`]) with the reason each is refused; IPv6 forms
//! that carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by that IPv4 address, and
//! IPv6 outside global unicast (`2000::/3`) is refused whole.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

/// Ranges never connected to unless the operator allows them, with why.
pub const FORBIDDEN: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\" / unspecified"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (CGNAT, RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (and broadcast)"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (Teredo, ORCHID, benchmarking)"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique local (ULA)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
];

static FORBIDDEN_NETS: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    FORBIDDEN
        .iter()
        .map(|(net, why)| (net.parse().expect("the FORBIDDEN table holds valid CIDRs"), *why))
        .collect()
});

/// What the operator allows (`--allow-private-targets`, `--allow-cidr`, `--https-only`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Every address is allowed (development only).
    pub allow_private: bool,
    /// Forbidden ranges the operator opened anyway (e.g. an internal merchant gateway).
    pub allow_cidrs: Vec<IpNet>,
    /// Refuse `http://` callbacks and status sources.
    pub https_only: bool,
}

impl TargetPolicy {
    /// Whether `ip` may be connected to.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.refusal(ip).is_none()
    }

    /// Why `ip` may not be connected to, or `None` when it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        if self.allow_private {
            return None;
        }
        let why = forbidden_reason(ip)?;
        // An IPv4-mapped address is the IPv4 address on the wire: match the allow-list on it.
        let canonical = ip.to_canonical();
        if self.allow_cidrs.iter().any(|net| net.contains(&canonical) || net.contains(&ip)) {
            return None;
        }
        Some(format!("{ip} is a forbidden address: {why}"))
    }

    /// Whether a URL scheme may be used.
    pub fn scheme_refusal(&self, scheme: &str) -> Option<String> {
        match scheme {
            "https" => None,
            "http" if !self.https_only => None,
            "http" => Some("http:// is refused: payhook runs with https_only".to_owned()),
            other => Some(format!("scheme {other} refused: only http and https")),
        }
    }
}

impl TargetPolicy {
    /// Why `url` can never be reached under this policy, judged on its text alone: a scheme
    /// the policy refuses, a host that is a forbidden address in any of its written forms
    /// (WHATWG parsing reads decimal, octal and hex IPv4 and bracketed IPv6 as the address
    /// they are), or `localhost`, which names the loopback addresses. A host name that merely
    /// resolves to a forbidden address passes here; the dispatcher refuses it after DNS.
    pub fn url_refusal(&self, url: &url::Url) -> Option<String> {
        if let Some(why) = self.scheme_refusal(url.scheme()) {
            return Some(why);
        }
        match url.host()? {
            url::Host::Ipv4(v4) => self.refusal(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => self.refusal(IpAddr::V6(v6)),
            url::Host::Domain(name) if is_localhost(name) => {
                let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
                let refused = loopback.iter().all(|ip| self.refusal(*ip).is_some());
                refused.then(|| format!("{name} is a forbidden address: loopback"))
            }
            url::Host::Domain(_) => None,
        }
    }
}

/// `localhost` and the names under it, which resolve to loopback (RFC 6761).
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Loopback, private, shared (CGNAT), link-local (cloud metadata), multicast, reserved,
/// documentation and unspecified addresses, including IPv4 addresses embedded in IPv6 forms.
pub fn is_forbidden(ip: IpAddr) -> bool {
    forbidden_reason(ip).is_some()
}

/// Why `ip` is forbidden, or `None` for a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = embedded_v4(v6) {
            return forbidden_reason(IpAddr::V4(v4));
        }
        if (v6.segments()[0] & 0xe000) != 0x2000 {
            if let Some(why) = table_reason(ip) {
                return Some(why);
            }
            return Some("not global unicast (outside 2000::/3)");
        }
    }
    table_reason(ip)
}

fn table_reason(ip: IpAddr) -> Option<&'static str> {
    FORBIDDEN_NETS.iter().find(|(net, _)| net.contains(&ip)).map(|(_, why)| *why)
}

/// The IPv4 address that decides where an IPv6 address really goes: IPv4-mapped
/// (`::ffff:a.b.c.d`), NAT64 well-known prefix (`64:ff9b::/96`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(v4_of(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(v4_of(s[1], s[2]));
    }
    None
}

fn v4_of(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(addr: &str) -> IpAddr {
        addr.parse().expect("test address parses")
    }

    #[test]
    fn forbidden_addresses() {
        for a in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            // IPv6 proper
            "::1",
            "::",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "3fff::1",
            "4000::1",
            "64:ff9b:1::a",
            // IPv4 embedded in IPv6
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::8.8.8.8",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.0.0.1",
            "2002:7f00:0001::1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:0101:1::1",
        ] {
            assert!(is_forbidden(ip(a)), "{a} must be forbidden");
        }
    }

    #[test]
    fn public_addresses() {
        for a in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert!(!is_forbidden(ip(a)), "{a} must be allowed");
        }
    }

    #[test]
    fn every_table_entry_is_refused_at_both_ends() {
        for (net, why) in FORBIDDEN {
            let net: IpNet = net.parse().expect("valid CIDR");
            for addr in [net.network(), net.broadcast()] {
                assert!(is_forbidden(addr), "{addr} of {net} ({why})");
            }
        }
    }

    #[test]
    fn the_switch_allows_everything() {
        let open = TargetPolicy { allow_private: true, ..TargetPolicy::default() };
        assert!(open.permits(ip("127.0.0.1")));
        assert!(open.permits(ip("169.254.169.254")));
        assert!(!TargetPolicy::default().permits(ip("127.0.0.1")));
    }

    #[test]
    fn the_allow_list_opens_only_its_ranges() {
        let policy = TargetPolicy {
            allow_cidrs: vec![
                "10.0.0.0/8".parse().expect("cidr"),
                "fd12::/16".parse().expect("v6"),
            ],
            ..TargetPolicy::default()
        };
        assert!(policy.permits(ip("10.20.30.40")));
        assert!(policy.permits(ip("::ffff:10.20.30.40")), "mapped form of an allowed address");
        assert!(policy.permits(ip("fd12::1")));
        assert!(!policy.permits(ip("fd13::1")));
        assert!(!policy.permits(ip("192.168.0.1")));
        assert!(!policy.permits(ip("169.254.169.254")));
        assert!(!policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("8.8.8.8")), "public addresses stay allowed");
        let why = policy.refusal(ip("169.254.169.254")).expect("refused");
        assert!(why.contains("link-local"), "{why}");
    }

    #[test]
    fn literal_forbidden_hosts_are_refused_in_every_written_form() {
        let policy = TargetPolicy::default();
        let refused = |u: &str| policy.url_refusal(&url::Url::parse(u).expect(u)).is_some();
        for u in [
            "http://169.254.169.254/latest",
            "http://10.0.0.1/",
            "http://[::1]/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://0x7f000001/",
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://localhost:8080/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "ftp://shop.example/",
        ] {
            assert!(refused(u), "{u} must be refused");
        }
        for u in ["https://shop.example/cb", "http://93.184.216.34/", "http://[2606:4700::1111]/"] {
            assert!(!refused(u), "{u} must pass");
        }
    }

    #[test]
    fn the_registration_check_honours_the_operators_policy() {
        let check = |policy: &TargetPolicy, u: &str| {
            policy.url_refusal(&url::Url::parse(u).expect(u)).is_none()
        };
        let open = TargetPolicy { allow_private: true, ..TargetPolicy::default() };
        assert!(check(&open, "http://127.0.0.1:9000/") && check(&open, "http://localhost/"));
        let cidr = TargetPolicy {
            allow_cidrs: vec!["127.0.0.0/8".parse().expect("cidr")],
            ..TargetPolicy::default()
        };
        assert!(check(&cidr, "http://127.0.0.1/") && check(&cidr, "http://localhost/"));
        assert!(!check(&cidr, "http://10.0.0.1/"));
        let strict = TargetPolicy { https_only: true, ..TargetPolicy::default() };
        assert!(!check(&strict, "http://shop.example/"));
        assert!(check(&strict, "https://shop.example/"));
    }

    #[test]
    fn schemes() {
        let lax = TargetPolicy::default();
        assert_eq!(lax.scheme_refusal("http"), None);
        assert_eq!(lax.scheme_refusal("https"), None);
        assert!(lax.scheme_refusal("ftp").is_some());
        assert!(lax.scheme_refusal("file").is_some());
        let strict = TargetPolicy { https_only: true, ..TargetPolicy::default() };
        assert!(strict.scheme_refusal("http").is_some());
        assert_eq!(strict.scheme_refusal("https"), None);
    }
}
