//! Reaching upstream servers: name resolution (system resolver plus static overrides),
//! the refusal of internal destinations, and connecting with a timeout.
//!
//! The destination check is made on the address actually dialled, after resolution, so a
//! public name that resolves to `127.0.0.1` or `10.0.0.5` cannot be used to pivot into
//! the school's own network or the proxy's admin listener.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpStream;

use crate::core::identity::canonical_ip;

/// Why an upstream could not be reached; picks the status code and the metric label.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The name did not resolve.
    #[error("could not find {host}: {detail}")]
    Dns {
        /// The name.
        host: String,
        /// What the resolver said.
        detail: String,
    },
    /// Every address refused or reset the connection.
    #[error("{host} refused the connection: {detail}")]
    Refused {
        /// The host.
        host: String,
        /// The last error.
        detail: String,
    },
    /// Connecting took too long.
    #[error("{host} did not answer in time")]
    Timeout {
        /// The host.
        host: String,
    },
    /// The server's TLS certificate did not verify (an inspected tunnel's upstream):
    /// never a silent pass, the client gets a page saying why.
    #[error("{host} did not prove who it is: {detail}")]
    Certificate {
        /// The host.
        host: String,
        /// What was wrong with its certificate.
        detail: String,
    },
    /// The address is internal and not allowed.
    #[error(
        "{host} is an internal address ({addr}); the proxy does not connect to internal networks"
    )]
    Internal {
        /// The host.
        host: String,
        /// The address it resolved to.
        addr: IpAddr,
    },
}

impl UpstreamError {
    /// The metric label / kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Dns { .. } => "dns",
            UpstreamError::Refused { .. } => "refused",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Internal { .. } => "internal",
            UpstreamError::Certificate { .. } => "certificate",
        }
    }
}

/// Resolution and destination rules, shared by the HTTP client and tunnels.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// Static name → address overrides (`[server.resolve]`).
    pub overrides: Arc<std::collections::HashMap<String, IpAddr>>,
    /// Internal networks that may be dialled anyway.
    pub allow_internal: Arc<Vec<IpNet>>,
    /// This node's own listening addresses (never dialled).
    pub own: Arc<Vec<SocketAddr>>,
    /// Connect timeout, over all addresses.
    pub connect_timeout: Duration,
}

/// Whether an address is internal: loopback, unspecified, link-local, multicast,
/// broadcast, private (RFC 1918, unique-local), shared (CGNAT) or documentation ranges.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_private()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

impl Dialer {
    /// Whether `addr` may be dialled.
    fn allowed(&self, addr: SocketAddr) -> bool {
        let ip = canonical_ip(addr.ip());
        let own = self.own.iter().any(|o| {
            o.port() == addr.port()
                && (canonical_ip(o.ip()) == ip || o.ip().is_unspecified() && is_internal(ip))
        });
        if own {
            return false;
        }
        !is_internal(ip) || self.allow_internal.iter().any(|n| n.contains(&ip))
    }

    /// Resolves `host` (a normalised name or IP literal) to addresses, overrides first,
    /// ordered so that IPv6 and IPv4 alternate (happy-eyeballs order, RFC 8305 §4).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, UpstreamError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some(ip) = self.overrides.get(bare) {
            return Ok(vec![SocketAddr::new(*ip, port)]);
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| UpstreamError::Dns {
                host: bare.to_string(),
                detail: e.to_string(),
            })?
            .collect();
        if found.is_empty() {
            return Err(UpstreamError::Dns {
                host: bare.to_string(),
                detail: "no addresses".into(),
            });
        }
        let (v6, v4): (Vec<SocketAddr>, Vec<SocketAddr>) =
            found.into_iter().partition(|a| a.is_ipv6());
        let mut ordered = Vec::with_capacity(v6.len() + v4.len());
        let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
        loop {
            match (a.next(), b.next()) {
                (None, None) => break,
                (x, y) => ordered.extend(x.into_iter().chain(y)),
            }
        }
        Ok(ordered)
    }

    /// Resolves and connects, refusing internal addresses and giving up after the
    /// connect timeout.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, UpstreamError> {
        let addrs = self.resolve(host, port).await?;
        let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| self.allowed(*a)).collect();
        if allowed.is_empty() {
            return Err(UpstreamError::Internal {
                host: host.to_string(),
                addr: addrs[0].ip(),
            });
        }
        let attempt = async {
            let mut last = None;
            for addr in &allowed {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(UpstreamError::Refused {
                host: host.to_string(),
                detail: last.map(|e| e.to_string()).unwrap_or_default(),
            })
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout {
                host: host.to_string(),
            }),
        }
    }
}

impl Dialer {
    /// The dialer for a snapshot's settings.
    pub fn for_snapshot(snap: &crate::snapshot::Snapshot, own: Arc<Vec<SocketAddr>>) -> Dialer {
        let s = &snap.settings.server;
        Dialer {
            overrides: Arc::new(s.resolve.clone()),
            allow_internal: Arc::new(s.allow_internal_destinations.clone()),
            own,
            connect_timeout: s.connect_timeout,
        }
    }
}

/// An error and its sources, joined: hyper's own message alone says little.
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_address_table() {
        let rows = [
            ("127.0.0.1", true),
            ("127.8.9.10", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("0.0.0.0", true),
            ("100.64.0.1", true),
            ("224.0.0.1", true),
            ("255.255.255.255", true),
            ("8.8.8.8", false),
            ("93.184.216.34", false),
            ("::1", true),
            ("::", true),
            ("fd00::1", true),
            ("fe80::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:8.8.8.8", false),
            ("2606:4700::1111", false),
        ];
        for (ip, want) in rows {
            assert_eq!(is_internal(ip.parse().expect("test IP")), want, "{ip}");
        }
    }
}
