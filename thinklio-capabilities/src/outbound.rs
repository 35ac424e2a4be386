//! Where capabilities that fetch what a model asks for may connect.
//!
//! A model chooses `web_fetch`'s URL, and a model can be talked into
//! choosing `http://169.254.169.254/` (a cloud's metadata service),
//! `http://localhost:5432/` or a host on the private network behind the
//! runtime. [`OutboundPolicy`] refuses every address that is not public —
//! loopback, private, link-local, carrier-grade NAT, unique-local,
//! multicast, documentation and unspecified ranges, and IPv4 addresses
//! written as IPv6 — unless the operator allows a host or a network by
//! name. It is checked on the addresses a name resolves to (so a public
//! name pointing at a private address is refused, and the address checked
//! is the address connected to: no second lookup can differ), on addresses
//! written in the URL, and on every redirect.
//!
//! [`read_limited`] reads a response body up to a size, so no answer can
//! make a capability hold more than its limit in memory.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;

/// Where requests may go: public addresses, and what the operator allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    hosts: BTreeSet<String>,
    networks: Vec<IpNet>,
}

/// A request the policy refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused to connect to {host} ({address}): not a public address; an operator can allow it")]
pub struct Refused {
    /// The host asked for.
    pub host: String,
    /// The address it is, or resolved to.
    pub address: IpAddr,
}

impl OutboundPolicy {
    /// Public addresses only: the default.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Also allows `host` (a name as written in URLs, or an address),
    /// whatever it resolves to.
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.hosts.insert(host.into().to_ascii_lowercase());
        self
    }

    /// Also allows every address in `network` (such as `10.1.0.0/16`).
    pub fn allow_network(mut self, network: IpNet) -> Self {
        self.networks.push(network);
        self
    }

    /// Whether a connection to `address`, reached as `host`, is allowed.
    pub fn permits(&self, host: &str, address: IpAddr) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        is_public(address)
            || self.hosts.contains(&host.to_ascii_lowercase())
            || self.networks.iter().any(|n| n.contains(&address))
    }

    /// Checks a URL whose host is an address (a name is checked when it
    /// resolves).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        let address = match url.host() {
            Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
            Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
            _ => return Ok(()),
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        if self.permits(&host, address) {
            Ok(())
        } else {
            Err(Refused { host, address })
        }
    }

    /// An HTTP client bound by this policy: names resolve only to permitted
    /// addresses, and redirects (at most `max_redirects`) are followed only
    /// to permitted ones.
    pub fn client(
        &self,
        timeout: Duration,
        max_redirects: usize,
    ) -> Result<reqwest::Client, reqwest::Error> {
        let policy = Arc::new(self.clone());
        let redirects = Arc::clone(&policy);
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .dns_resolver(Arc::new(Resolver { policy }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max_redirects {
                    return attempt.error(format!("more than {max_redirects} redirects"));
                }
                match redirects.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refused) => attempt.error(refused),
                }
            }))
            .build()
    }
}

/// Whether `address` is on the public internet.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(a) => {
            let [b0, b1, ..] = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || b0 == 0
                // carrier-grade NAT, 100.64.0.0/10
                || (b0 == 100 && (b1 & 0xc0) == 64)
                // IETF protocol assignments, 192.0.0.0/24; benchmarking, 198.18.0.0/15
                || (b0 == 192 && b1 == 0 && a.octets()[2] == 0)
                || (b0 == 198 && (b1 & 0xfe) == 18)
                // reserved, 240.0.0.0/4
                || b0 >= 240)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = a.segments()[0];
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                // unique local, fc00::/7
                || (first & 0xfe00) == 0xfc00
                // link-local, fe80::/10
                || (first & 0xffc0) == 0xfe80
                // documentation, 2001:db8::/32
                || (first == 0x2001 && a.segments()[1] == 0x0db8)
                // IPv4-compatible and NAT64 forms of any IPv4 address
                || a.segments()[..6].iter().all(|s| *s == 0)
                || (first == 0x0064 && a.segments()[1] == 0xff9b))
        }
    }
}

/// Resolves names through the system, keeping only permitted addresses.
struct Resolver {
    policy: Arc<OutboundPolicy>,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.permits(&host, a.ip()))
                .collect();
            match (permitted.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs),
                (true, Some(first)) => Err(Box::new(Refused {
                    host,
                    address: first.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                (true, None) => Err(format!("{host} has no address").into()),
            }
        })
    }
}

/// The refusal behind a request error, if the policy refused it.
pub fn refusal(error: &reqwest::Error) -> Option<&Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = e.source();
    }
    None
}

/// Reads at most `max` bytes of a response body: the bytes, and whether
/// the body was longer (the rest is not read).
pub async fn read_limited(
    response: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let room = max.saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!is_public(ip), "{private}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(is_public(ip), "{public}");
        }
    }

    #[test]
    fn an_operator_allows_hosts_and_networks_by_name() {
        let policy = OutboundPolicy::public_only()
            .allow_host("Intranet.Example")
            .allow_network("10.1.0.0/16".parse().unwrap());
        let ten: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "10.2.0.1".parse().unwrap();
        assert!(policy.permits("intranet.example", other));
        assert!(policy.permits("anything", ten));
        assert!(!policy.permits("anything", other));
        let url = reqwest::Url::parse("http://[::1]:8080/").unwrap();
        assert!(policy.check_url(&url).is_err());
        let allowed = OutboundPolicy::public_only().allow_host("::1");
        assert!(allowed.check_url(&url).is_ok());
    }
}
