//! Outbound target policy for `http.request`: which addresses a node may reach, and the resolution whose
//! checked addresses the request is then pinned to, so a second DNS answer cannot swap them (rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// One `HTTP_NODE_ALLOW_HOSTS` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Host(String),
    Net { addr: IpAddr, prefix: u8 },
}

/// The operator's exceptions to the policy: hostnames, IPs and CIDRs, comma separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// Unusable entries (a bad CIDR) are skipped with a warning: they can only ever allow less.
    pub fn parse(raw: &str) -> Self {
        let mut entries = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match parse_entry(item) {
                Some(e) => entries.push(e),
                None => tracing::warn!(
                    entry = item,
                    "ignoring unusable HTTP_NODE_ALLOW_HOSTS entry"
                ),
            }
        }
        Self { entries }
    }

    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::Host(h) if *h == host))
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.entries.iter().any(|e| match e {
            Entry::Net { addr, prefix } => in_net(ip, *addr, *prefix),
            Entry::Host(_) => false,
        })
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
}

fn parse_entry(item: &str) -> Option<Entry> {
    if let Some((addr, prefix)) = item.split_once('/') {
        let addr = parse_ip(addr)?;
        let prefix: u8 = prefix.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        return Some(canonical_net(addr, prefix));
    }
    if let Some(addr) = parse_ip(item) {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        return Some(canonical_net(addr, prefix));
    }
    let host = normalize_host(item);
    if host.is_empty() || host.contains(['/', ' ', '[', ']']) {
        return None;
    }
    Some(Entry::Host(host))
}

/// `::ffff:a.b.c.d/96+n` is stored as `a.b.c.d/n`, because candidates are canonicalised before matching.
fn canonical_net(addr: IpAddr, prefix: u8) -> Entry {
    match addr {
        IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => Entry::Net {
                addr: IpAddr::V4(v4),
                prefix: prefix - 96,
            },
            None => Entry::Net { addr, prefix },
        },
        _ => Entry::Net { addr, prefix },
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => v4_in(a, n, prefix),
        (IpAddr::V6(a), IpAddr::V6(n)) => v6_in(a, n, prefix),
        _ => false,
    }
}

fn v4_in(ip: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn v6_in(ip: Ipv6Addr, net: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// IPv4 ranges that are not public unicast destinations.
const V4_FORBIDDEN: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network", unspecified
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // CGNAT shared space
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local (cloud metadata)
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, broadcast
];

/// IPv6 ranges refused outright (ranges embedding an IPv4 address are judged by that address).
const V6_FORBIDDEN: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128), // unspecified
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128), // loopback
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard-only
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32), // Teredo
    (Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0), 48), // benchmarking
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
];

/// The IPv4 address an IPv6 address stands for, when it embeds one that routing may reach: IPv4-mapped
/// `::ffff:0:0/96`, IPv4-compatible `::/96` (deprecated), NAT64 `64:ff9b::/96`, 6to4 `2002::/16`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if v6_in(ip, Ipv6Addr::UNSPECIFIED, 96) && bits > 1 {
        return Some(low32);
    }
    if v6_in(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return Some(low32);
    }
    if v6_in(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

/// Whether `ip` is anything other than a public unicast address.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => V4_FORBIDDEN.iter().any(|(n, p)| v4_in(v4, *n, *p)),
        IpAddr::V6(v6) => {
            if V6_FORBIDDEN.iter().any(|(n, p)| v6_in(v6, *n, *p)) {
                return true;
            }
            match embedded_v4(v6) {
                Some(v4) => is_forbidden(IpAddr::V4(v4)),
                None => false,
            }
        }
    }
}

/// Where a checked request may connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// The URL's host name, to pin to `addrs`; `None` when the URL holds an IP literal.
    pub domain: Option<String>,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug)]
pub enum TargetError {
    /// Scheme other than http(s), or an address the policy refuses.
    Forbidden(String),
    /// The name did not resolve.
    Resolve(String),
}

/// Checks `url` against the policy, resolving its host once.
pub async fn check(url: &Url, allow: &AllowList) -> Result<Pinned, TargetError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::Forbidden(format!(
            "scheme {} is not allowed",
            url.scheme()
        )));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| TargetError::Forbidden("no port".into()))?;
    let (domain, ips): (Option<String>, Vec<IpAddr>) = match url.host() {
        Some(Host::Ipv4(v4)) => (None, vec![IpAddr::V4(v4)]),
        Some(Host::Ipv6(v6)) => (None, vec![IpAddr::V6(v6)]),
        Some(Host::Domain(d)) => {
            let found = tokio::net::lookup_host((d, port))
                .await
                .map_err(|e| TargetError::Resolve(e.to_string()))?;
            let mut ips: Vec<IpAddr> = found.map(|a| a.ip()).collect();
            ips.dedup();
            if ips.is_empty() {
                return Err(TargetError::Resolve("no addresses".into()));
            }
            (Some(d.to_string()), ips)
        }
        None => return Err(TargetError::Forbidden("no host".into())),
    };
    let host_allowed = domain.as_deref().is_some_and(|d| allow.allows_host(d));
    let mut addrs = Vec::with_capacity(ips.len());
    for ip in ips {
        let ip = ip.to_canonical();
        if !host_allowed && is_forbidden(ip) && !allow.allows_ip(ip) {
            return Err(TargetError::Forbidden(format!(
                "address {ip} is not public"
            )));
        }
        addrs.push(SocketAddr::new(ip, port));
    }
    Ok(Pinned { domain, addrs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forbidden_ipv4() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_forbidden(ip(a)), "{a} must be refused");
        }
    }

    #[test]
    fn public_ipv4() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "140.82.112.3",
        ] {
            assert!(!is_forbidden(ip(a)), "{a} is public");
        }
    }

    #[test]
    fn forbidden_ipv6() {
        for a in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456:789a::1",
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "2001::1",
            "2001:2::1",
            "3fff::1",
            "100::1",
            "64:ff9b:1::1",
            // IPv4-mapped forms of refused IPv4 addresses
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:100.64.0.1",
            "::ffff:0.0.0.0",
            "::ffff:7f00:1",
            // IPv4-compatible, NAT64 and 6to4 embedding a refused address
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::127.0.0.1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2002:c0a8:101::5",
        ] {
            assert!(is_forbidden(ip(a)), "{a} must be refused");
        }
    }

    #[test]
    fn public_ipv6() {
        for a in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:4860:4860::8888",
            "fbff:ffff::1",
            "fe00::1",
        ] {
            assert!(!is_forbidden(ip(a)), "{a} is public");
        }
    }

    #[test]
    fn allowlist_entries() {
        let a = AllowList::parse(" 127.0.0.1/32, 10.1.0.0/16 ,Internal.Example.COM., ::1, fd00::/8, ,192.168.0.0/99, 172.16.0.5 ");
        assert!(a.allows_ip(ip("127.0.0.1")));
        assert!(!a.allows_ip(ip("127.0.0.2")));
        assert!(a.allows_ip(ip("10.1.200.3")));
        assert!(!a.allows_ip(ip("10.2.0.1")));
        assert!(a.allows_ip(ip("::1")));
        assert!(a.allows_ip(ip("fd12::1")));
        assert!(!a.allows_ip(ip("fc00::1")));
        assert!(a.allows_ip(ip("172.16.0.5")));
        assert!(!a.allows_ip(ip("172.16.0.6")));
        // the invalid /99 entry is dropped, not widened
        assert!(!a.allows_ip(ip("192.168.0.1")));
        // mapped candidates match their IPv4 entry
        assert!(a.allows_ip(ip("::ffff:127.0.0.1")));
        assert!(a.allows_ip(ip("::ffff:10.1.0.9")));
        assert!(a.allows_host("internal.example.com"));
        assert!(a.allows_host("INTERNAL.example.com."));
        assert!(!a.allows_host("example.com"));
        assert!(!a.allows_host("x.internal.example.com"));
    }

    #[test]
    fn allowlist_cidr_edges() {
        let a = AllowList::parse("0.0.0.0/0");
        assert!(a.allows_ip(ip("10.0.0.1")));
        assert!(!a.allows_ip(ip("::1")), "an IPv4 net never matches IPv6");
        let a = AllowList::parse("::/0");
        assert!(a.allows_ip(ip("fe80::1")));
        let a = AllowList::parse("::ffff:192.168.0.0/112");
        assert!(a.allows_ip(ip("192.168.3.4")));
        assert!(!a.allows_ip(ip("192.169.0.1")));
        let a = AllowList::parse("[::1]");
        assert!(a.allows_ip(ip("::1")));
        assert_eq!(AllowList::parse(""), AllowList::default());
        assert_eq!(AllowList::parse(" , ,"), AllowList::default());
    }

    #[tokio::test]
    async fn check_literals_and_schemes() {
        let none = AllowList::default();
        let url = |s: &str| Url::parse(s).unwrap();
        for u in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://10.0.0.1/",
            "ftp://8.8.8.8/",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(check(&url(u), &none).await, Err(TargetError::Forbidden(_))),
                "{u} must be refused"
            );
        }
        let p = check(&url("https://8.8.8.8/dns"), &none).await.unwrap();
        assert_eq!(p.domain, None);
        assert_eq!(p.addrs, vec!["8.8.8.8:443".parse().unwrap()]);

        let lo = AllowList::parse("127.0.0.1");
        let p = check(&url("http://127.0.0.1:9/"), &lo).await.unwrap();
        assert_eq!(p.addrs, vec!["127.0.0.1:9".parse().unwrap()]);
        let p = check(&url("http://[::ffff:127.0.0.1]:9/"), &lo)
            .await
            .unwrap();
        assert_eq!(
            p.addrs,
            vec!["127.0.0.1:9".parse().unwrap()],
            "pinned to the canonical address"
        );
        assert!(check(&url("http://127.0.0.2/"), &lo).await.is_err());
    }

    #[tokio::test]
    async fn check_resolves_names() {
        let url = Url::parse("http://localhost:1234/").unwrap();
        assert!(matches!(
            check(&url, &AllowList::default()).await,
            Err(TargetError::Forbidden(_))
        ));
        let p = check(&url, &AllowList::parse("LOCALHOST")).await.unwrap();
        assert_eq!(p.domain.as_deref(), Some("localhost"));
        assert!(!p.addrs.is_empty());
        assert!(p.addrs.iter().all(|a| a.port() == 1234));
        assert!(p.addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
