//! Where deliveries may go: never, by default, to the addresses of the
//! machine and network Bida runs in (loopback, private, link-local with the
//! cloud metadata address, CGNAT, multicast, reserved), whatever the URL's
//! spelling — an endpoint URL is input from whoever may submit tasks.
//!
//! The check is made on the address actually connected to: names are
//! resolved by [`GuardedResolver`], which hands reqwest only permitted
//! addresses (a name that resolves differently on a second lookup cannot
//! slip through), and literal addresses are checked before the request is
//! sent (reqwest does not resolve them). Redirects are not followed.
//! `delivery.allow_networks` opens ranges on purpose.

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock};

/// Ranges deliveries may not reach unless allowed, with why.
static BLOCKED: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    [
        ("0.0.0.0/8", "\"this network\" (unspecified)"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking (RFC 2544)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved or broadcast"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    ]
    .into_iter()
    .map(|(net, why)| (net.parse().expect("a valid range"), why))
    .collect()
});

/// A refused address, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{address} is {reason}: deliveries may not reach it (delivery.allow_networks opens ranges)")]
pub struct Blocked {
    pub address: IpAddr,
    pub reason: &'static str,
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it
/// (IPv4-mapped, NAT64, 6to4).
fn embedded_v4(address: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = address else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let from = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(from(hi, lo)),
        [0x2002, hi, lo, ..] => Some(from(hi, lo)),
        _ => None,
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressGuard {
    allow: Vec<IpNet>,
}

impl EgressGuard {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    fn allowed(&self, address: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&address))
    }

    pub fn check(&self, address: IpAddr) -> Result<(), Blocked> {
        let inner = embedded_v4(address).map(IpAddr::V4);
        if self.allowed(address) || inner.is_some_and(|v4| self.allowed(v4)) {
            return Ok(());
        }
        for candidate in [Some(address), inner].into_iter().flatten() {
            if let Some((_, reason)) = BLOCKED.iter().find(|(net, _)| net.contains(&candidate)) {
                return Err(Blocked { address, reason });
            }
        }
        Ok(())
    }

    /// Checks a URL whose host is a literal address (names are checked when
    /// resolved); the URL parser has already read every spelling of an IPv4
    /// address (decimal, hex, octal, short forms) as the address it means.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Blocked> {
        match url.host() {
            Some(url::Host::Ipv4(v4)) => self.check(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.check(IpAddr::V6(v6)),
            _ => Ok(()),
        }
    }

    /// The addresses of `host` this guard permits (a literal address is
    /// checked as it is); an error names why none is.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("{host}: {e}"))?
            .collect();
        let mut refused = None;
        let permitted: Vec<SocketAddr> = found
            .into_iter()
            .filter(|address| match self.check(address.ip()) {
                Ok(()) => true,
                Err(blocked) => {
                    refused.get_or_insert(blocked);
                    false
                }
            })
            .collect();
        match (permitted.is_empty(), refused) {
            (true, Some(blocked)) => Err(format!("{host}: {blocked}")),
            _ => Ok(permitted),
        }
    }

    /// A reqwest resolver that returns only the addresses this guard permits.
    pub fn resolver(&self) -> GuardedResolver {
        GuardedResolver {
            guard: Arc::new(self.clone()),
        }
    }
}

#[derive(Clone)]
pub struct GuardedResolver {
    guard: Arc<EgressGuard>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let permitted = guard.resolve(name.as_str(), 0).await?;
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(url: &str) -> bool {
        let url = url::Url::parse(url).unwrap();
        EgressGuard::default().check_url(&url).is_err()
    }

    #[test]
    fn every_spelling_of_an_internal_address_is_refused() {
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:169.254.169.254]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "http://[::]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[::127.0.0.1]/",
        ] {
            assert!(blocked(url), "{url} should be refused");
        }
    }

    #[test]
    fn public_addresses_and_names_pass_the_literal_check() {
        for url in [
            "http://93.184.215.14/",
            "http://[2606:4700::1111]/",
            "http://example.com/",
            "http://172.32.0.1/",
        ] {
            assert!(!blocked(url), "{url} should pass");
        }
    }

    #[test]
    fn allowed_networks_open_ranges_in_either_spelling() {
        let guard = EgressGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(guard.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(guard.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(guard.check("10.0.0.1".parse().unwrap()).is_err());
        let refusal = guard.check("169.254.169.254".parse().unwrap()).unwrap_err();
        assert_eq!(refusal.reason, "link-local (cloud metadata)");
    }

    #[tokio::test]
    async fn names_that_resolve_to_blocked_addresses_are_refused() {
        let resolver = EgressGuard::default().resolver();
        let error = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(error.contains("loopback"), "{error}");
        let open = EgressGuard::new(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]).resolver();
        let addrs: Vec<_> = open.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(!addrs.is_empty());
    }
}
