//! The client's address. Behind a reverse proxy every request comes from the proxy, so the address the
//! proxy saw is taken from `Forwarded` / `X-Forwarded-For`, but only when the socket peer is a proxy the
//! config trusts: anyone else could write those headers.

use std::net::IpAddr;

use actix_web::{web, HttpRequest};
use ipnet::IpNet;

/// Which header the trusted proxies write the client's address into. Only that one is read: a proxy
/// passes the other through untouched, so a client could write it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    #[default]
    XForwardedFor,
    Forwarded,
}

impl ForwardedHeader {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            other => Err(format!("`{other}`: expected x-forwarded-for or forwarded")),
        }
    }
}

/// `server.trusted_proxies` and `server.trusted_proxy_header`, parsed once; put into app data by the api
/// role.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// The header the proxies write.
    pub fn with_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Comma-separated CIDRs or single addresses.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => item
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("`{item}` is not an IP address or CIDR"))?,
            };
            nets.push(net);
        }
        Ok(Self {
            nets,
            header: ForwardedHeader::default(),
        })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// The unit a per-client limit counts: an IPv4 address, or an IPv6 client's /64 (one subscriber's
/// network; counting single addresses would give whoever holds a /64 billions of fresh budgets).
pub fn client_bucket(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mut segs = v6.segments();
            for s in segs.iter_mut().skip(4) {
                *s = 0;
            }
            format!("{}/64", std::net::Ipv6Addr::from(segs))
        }
        v4 => v4.to_string(),
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: the socket peer, or, when the peer is a trusted proxy, the rightmost address of
/// the forwarding chain that is not itself a trusted proxy (the leftmost entries are whatever the client
/// chose to send).
pub fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    let peer = canonical(req.peer_addr()?.ip());
    let Some(trusted) = req.app_data::<web::Data<TrustedProxies>>() else {
        return Some(peer);
    };
    if !trusted.trusts(peer) {
        return Some(peer);
    }
    let chain = forwarded_chain(req, trusted.header);
    Some(
        chain
            .into_iter()
            .rev()
            .find(|ip| !trusted.trusts(*ip))
            .unwrap_or(peer),
    )
}

/// The addresses a request passed through, client first, from the configured header. Entries that are
/// not addresses (`unknown`, obfuscated names) end the chain there: nothing left of them can be trusted.
fn forwarded_chain(req: &HttpRequest, header: ForwardedHeader) -> Vec<IpAddr> {
    let headers = req.headers();
    let raw: Vec<String> = match header {
        ForwardedHeader::XForwardedFor => headers
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .collect(),
        ForwardedHeader::Forwarded => headers
            .get_all("forwarded")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| v.trim().to_string())
                })
            })
            .collect(),
    };
    let mut chain = Vec::new();
    for entry in raw {
        match parse_node(&entry) {
            Some(ip) => chain.push(canonical(ip)),
            // Drop everything before an unparsable hop: only what follows it is known.
            None => chain.clear(),
        }
    }
    chain
}

/// `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn req(peer: &str, headers: &[(&str, &str)], trusted: &str) -> HttpRequest {
        req_with(peer, headers, trusted, ForwardedHeader::XForwardedFor)
    }

    fn req_with(
        peer: &str,
        headers: &[(&str, &str)],
        trusted: &str,
        header: ForwardedHeader,
    ) -> HttpRequest {
        let proxies = TrustedProxies::parse(trusted).unwrap().with_header(header);
        let mut r = TestRequest::default()
            .peer_addr(peer.parse().unwrap())
            .app_data(web::Data::new(proxies));
        for (k, v) in headers {
            r = r.insert_header((*k, *v));
        }
        r.to_http_request()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let r = req("203.0.113.9:5000", &[("x-forwarded-for", "1.1.1.1")], "");
        assert_eq!(client_ip(&r), ip("203.0.113.9"));
        let r = req(
            "203.0.113.9:5000",
            &[("x-forwarded-for", "1.1.1.1")],
            "10.0.0.0/8",
        );
        assert_eq!(client_ip(&r), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_proxies_pass_on_the_rightmost_untrusted_hop() {
        let trusted = "10.0.0.0/8, 192.168.1.1";
        let r = req(
            "10.0.0.5:5000",
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 192.168.1.1")],
            trusted,
        );
        assert_eq!(client_ip(&r), ip("198.51.100.7"));
        let r = req_with(
            "10.0.0.5:5000",
            &[(
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https",
            )],
            trusted,
            ForwardedHeader::Forwarded,
        );
        assert_eq!(client_ip(&r), ip("2001:db8::1"));
        // The header the proxies do not write is the client's: never read.
        let r = req(
            "10.0.0.5:5000",
            &[
                ("forwarded", "for=1.2.3.4"),
                ("x-forwarded-for", "198.51.100.7"),
            ],
            trusted,
        );
        assert_eq!(client_ip(&r), ip("198.51.100.7"));
        // Only proxies in the chain: the peer itself.
        let r = req("10.0.0.5:5000", &[("x-forwarded-for", "10.1.1.1")], trusted);
        assert_eq!(client_ip(&r), ip("10.0.0.5"));
        // Garbage resets what came before it.
        let r = req(
            "10.0.0.5:5000",
            &[("x-forwarded-for", "6.6.6.6, unknown, 198.51.100.8")],
            trusted,
        );
        assert_eq!(client_ip(&r), ip("198.51.100.8"));
        let r = req("10.0.0.5:5000", &[], trusted);
        assert_eq!(client_ip(&r), ip("10.0.0.5"));
    }

    #[test]
    fn bad_entries_are_named() {
        assert!(TrustedProxies::parse("10.0.0.0/8,nope").is_err());
        assert!(TrustedProxies::parse("").is_ok());
    }
}
