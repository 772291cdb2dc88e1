//! The SSRF guard: an endpoint's URL never reaches an address inside the network we run in.
//!
//! Endpoint URLs come from API consumers. Without a guard, a URL naming `169.254.169.254`
//! (the cloud metadata service), `10.0.0.5` or a host name that resolves to `127.0.0.1`
//! turns the webhook sender into a proxy into our own network. So:
//!
//! 1. **Resolve once.** The URL's host is resolved once per delivery (a literal address is
//!    taken as it is), and *every* address it resolves to is checked. A name that mixes
//!    public and internal addresses is refused whole: connecting to its public addresses
//!    only would make a probe of our network succeed by chance.
//! 2. **Refuse internal ranges** ([`forbidden_range`]): IPv4 this-network (0/8, with the
//!    unspecified address), private (10/8, 172.16/12, 192.168/16), loopback (127/8),
//!    link-local (169.254/16, with the metadata service), CGNAT (100.64/10), IETF protocol
//!    assignments (192.0.0/24), benchmarking (198.18/15), documentation, the 6to4 relay,
//!    multicast (224/4), reserved (240/4) and broadcast; IPv6 unspecified, loopback,
//!    IPv4-mapped (`::ffff:0:0/96`, judged by the IPv4 address inside), IPv4-compatible,
//!    NAT64, discard, IETF protocol assignments (with Teredo), documentation, 6to4, unique
//!    local (fc00::/7), link-local (fe80::/10), site-local and multicast. Outside 2000::/3
//!    no IPv6 address is global unicast, so everything there is refused too.
//! 3. **Connect to the checked address.** The HTTP client never resolves names itself:
//!    its resolver ([`Pinned`]) answers only with addresses this guard checked, so there is
//!    no window between the check and the connection for a name to be re-pointed (DNS
//!    rebinding). The client also ignores proxy settings, whose proxy would make the
//!    connection instead.
//! 4. **Allow-list.** `allow.cidrs` (for webhooks, `webhooks.allow.cidrs`) opens ranges, for
//!    internal deployments and for tests on loopback. An allowed range wins over a forbidden
//!    one.
//!
//! A refusal is the outcome `forbidden-destination`; no connection is made. Redirects are
//! never followed, so a `302` to an internal address stays a permanent `redirect` answer
//! and never becomes a second request.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why the guard did not let a delivery through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The destination is, or resolves to, an internal address. Names the range, never the
    /// address or the URL.
    #[error(
        "the destination resolves to a {range} address, which is refused (an allow-list of CIDRs can open a range)"
    )]
    Forbidden { range: &'static str },
    /// The host name did not resolve, or resolved to nothing.
    #[error("the destination's host name did not resolve: {reason}")]
    Unresolved { reason: String },
    /// The URL has no host to connect to.
    #[error("the destination URL has no host")]
    NoHost,
}

/// Checks destinations against the forbidden ranges and the allow-list.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

impl Guard {
    /// A guard whose allow-list opens `allow`.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Guard { allow }
    }

    /// Why `ip` is refused, or `None` when it may be connected to.
    pub fn check_ip(&self, ip: IpAddr) -> Option<&'static str> {
        // An IPv4-mapped IPv6 address reaches the IPv4 address inside: judge that one, by
        // both the forbidden ranges and the allow-list.
        let ip = ip.to_canonical();
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        forbidden_range(ip)
    }

    /// Resolves `url`'s host once (within `timeout`) and checks every address: the
    /// addresses to connect to, each with the URL's port.
    pub async fn resolve(
        &self,
        url: &Url,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, GuardError> {
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = match url.host() {
            None => return Err(GuardError::NoHost),
            Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Some(Host::Domain(host)) => {
                let lookup = tokio::net::lookup_host((host, port));
                match tokio::time::timeout(timeout, lookup).await {
                    Err(_) => {
                        return Err(GuardError::Unresolved {
                            reason: format!("no answer within {timeout:?}"),
                        });
                    }
                    // The resolver's message names the host at most, which is configuration.
                    Ok(Err(e)) => {
                        return Err(GuardError::Unresolved {
                            reason: e.to_string(),
                        });
                    }
                    Ok(Ok(found)) => found.collect(),
                }
            }
        };
        if addrs.is_empty() {
            return Err(GuardError::Unresolved {
                reason: "no addresses".to_owned(),
            });
        }
        if let Some(range) = addrs.iter().find_map(|a| self.check_ip(a.ip())) {
            return Err(GuardError::Forbidden { range });
        }
        Ok(addrs)
    }
}

/// Why `ip` is never a destination (the name of its range), whatever the allow-list; `None`
/// for a global unicast address. IPv4-mapped IPv6 addresses are judged by the IPv4 address
/// inside.
pub fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_broadcast() {
        return Some("broadcast");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    static RANGES: LazyLock<Vec<(Ipv4Net, &'static str)>> = LazyLock::new(|| parsed(V4_RANGES));
    RANGES
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, name)| *name)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    static RANGES: LazyLock<Vec<(Ipv6Net, &'static str)>> = LazyLock::new(|| parsed(V6_RANGES));
    static GLOBAL_UNICAST: LazyLock<Ipv6Net> = LazyLock::new(|| "2000::/3".parse().unwrap());
    if let Some((_, name)) = RANGES.iter().find(|(net, _)| net.contains(&ip)) {
        return Some(name);
    }
    if !GLOBAL_UNICAST.contains(&ip) {
        return Some("reserved");
    }
    None
}

/// The ranges parsed once, on first use.
fn parsed<N: std::str::FromStr>(ranges: &[(&str, &'static str)]) -> Vec<(N, &'static str)> {
    let parse = |cidr: &str| {
        cidr.parse()
            .ok()
            .expect("the forbidden ranges are valid CIDRs")
    };
    ranges
        .iter()
        .map(|(cidr, name)| (parse(cidr), *name))
        .collect()
}

/// Forbidden IPv4 ranges (IANA special-purpose registry), with the name a refusal gives.
const V4_RANGES: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this-network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "ietf-protocol"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4-relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
];

/// Forbidden IPv6 ranges beyond the unspecified and loopback addresses; anything outside
/// 2000::/3 is refused as well.
const V6_RANGES: &[(&str, &str)] = &[
    ("::/96", "ipv4-compatible"),
    ("64:ff9b::/96", "nat64"),
    ("64:ff9b:1::/48", "nat64"),
    ("100::/64", "discard"),
    ("2001::/23", "ietf-protocol"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// The HTTP client's resolver: it answers only with addresses the guard checked, and
/// never looks a name up itself.
///
/// Before each request the deliverer pins the addresses it just checked for the URL's
/// host; when the client opens a connection it asks this resolver, and gets those. Two
/// deliveries to one host may pin one after the other: whichever the client reads, it was
/// checked. A host nobody pinned does not resolve at all.
#[derive(Clone, Default)]
pub struct Pinned {
    hosts: Arc<RwLock<HashMap<String, Arc<[SocketAddr]>>>>,
}

impl Pinned {
    /// Pins `addrs`, checked by the guard, as what `host` resolves to.
    pub fn pin(&self, host: &str, addrs: &[SocketAddr]) {
        let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        if hosts.get(host).is_some_and(|old| **old == *addrs) {
            return;
        }
        hosts.insert(host.to_owned(), addrs.into());
    }

    fn lookup(&self, host: &str) -> Option<Arc<[SocketAddr]>> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        hosts.get(host).cloned()
    }
}

impl fmt::Debug for Pinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pinned").finish_non_exhaustive()
    }
}

/// The error of a lookup for a host the guard never checked.
#[derive(Debug, thiserror::Error)]
#[error("the host was not checked by the SSRF guard, and is not resolved")]
struct Unpinned;

impl Resolve for Pinned {
    fn resolve(&self, name: Name) -> Resolving {
        let found: Option<Vec<SocketAddr>> = self.lookup(name.as_str()).map(|a| a.to_vec());
        Box::pin(async move {
            match found {
                Some(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                None => Err(Box::new(Unpinned) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> Option<&'static str> {
        Guard::default().check_ip(ip.parse().unwrap())
    }

    #[test]
    fn internal_ipv4_ranges_are_refused() {
        for (ip, range) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.255", "cgnat"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this-network"),
            ("240.0.0.1", "reserved"),
            ("192.0.0.8", "ietf-protocol"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("192.88.99.1", "6to4-relay"),
        ] {
            assert_eq!(refused(ip), Some(range), "{ip}");
        }
    }

    #[test]
    fn public_ipv4_addresses_pass_including_the_edges_of_forbidden_ranges() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "11.0.0.1",
            "223.255.255.255",
        ] {
            assert_eq!(refused(ip), None, "{ip}");
        }
    }

    #[test]
    fn internal_ipv6_ranges_are_refused() {
        for (ip, range) in [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique-local"),
            ("fd12:3456:789a::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "ietf-protocol"),
            ("2002:a00:1::1", "6to4"),
            ("64:ff9b::a00:1", "nat64"),
            ("100::1", "discard"),
            ("::10.0.0.1", "ipv4-compatible"),
            ("4000::1", "reserved"),
        ] {
            assert_eq!(refused(ip), Some(range), "{ip}");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_are_judged_by_the_ipv4_address_inside() {
        assert_eq!(refused("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(refused("::ffff:10.0.0.1"), Some("private"));
        assert_eq!(refused("::ffff:169.254.169.254"), Some("link-local"));
        assert_eq!(refused("::ffff:8.8.8.8"), None);
        let allowed = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(allowed.check_ip("::ffff:127.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn global_ipv6_unicast_passes() {
        for ip in ["2606:4700:4700::1111", "2a00:1450:4001:80b::200e"] {
            assert_eq!(refused(ip), None, "{ip}");
        }
    }

    #[test]
    fn the_allow_list_opens_only_its_ranges() {
        let guard = Guard::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert_eq!(guard.check_ip("127.0.0.1".parse().unwrap()), None);
        assert_eq!(guard.check_ip("127.9.9.9".parse().unwrap()), None);
        assert_eq!(guard.check_ip("::1".parse().unwrap()), None);
        assert_eq!(guard.check_ip("10.0.0.1".parse().unwrap()), Some("private"));
        assert_eq!(
            guard.check_ip("169.254.169.254".parse().unwrap()),
            Some("link-local")
        );
    }

    #[tokio::test]
    async fn a_literal_address_is_checked_without_a_lookup() {
        let guard = Guard::default();
        let timeout = Duration::from_secs(1);
        for (url, range) in [
            ("http://10.0.0.1/hook", "private"),
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://[::1]:8080/", "loopback"),
            ("https://[::ffff:192.168.0.1]/", "private"),
        ] {
            let err = guard
                .resolve(&url.parse().unwrap(), timeout)
                .await
                .unwrap_err();
            assert_eq!(err, GuardError::Forbidden { range }, "{url}");
        }
        let addrs = guard
            .resolve(&"https://1.1.1.1/".parse().unwrap(), timeout)
            .await
            .unwrap();
        assert_eq!(addrs, ["1.1.1.1:443".parse().unwrap()]);
    }

    #[tokio::test]
    async fn a_name_is_resolved_and_every_address_checked() {
        let url: Url = "http://localhost:9/".parse().unwrap();
        let timeout = Duration::from_secs(5);
        let err = Guard::default().resolve(&url, timeout).await.unwrap_err();
        assert_eq!(err, GuardError::Forbidden { range: "loopback" });

        let allowed = Guard::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        let addrs = allowed.resolve(&url, timeout).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_unresolved_not_forbidden() {
        let url: Url = "http://no-such-host.invalid/".parse().unwrap();
        let err = Guard::default()
            .resolve(&url, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, GuardError::Unresolved { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn the_client_resolver_answers_only_with_pinned_addresses() {
        let pinned = Pinned::default();
        let checked: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        pinned.pin("hooks.example.com", &[checked]);

        let found: Vec<SocketAddr> = pinned
            .resolve("hooks.example.com".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(found, [checked]);
        assert!(
            pinned
                .resolve("example.org".parse().unwrap())
                .await
                .is_err(),
            "a host nobody checked does not resolve"
        );
    }
}
