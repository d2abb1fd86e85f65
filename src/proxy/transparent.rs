//! Transparent mode: connections the firewall redirects to Gatehouse from devices with
//! no proxy settings (guest and BYOD networks; see `deploy/nftables/`). Nothing in them
//! says "proxy": a redirected port-80 connection carries ordinary origin-form requests,
//! and a redirected port-443 connection a TLS handshake meant for the server.
//!
//! - Port 80 (`http_listen`): each request's `Host` header names the site, and the
//!   request then takes exactly the proxied plain-HTTP path
//!   ([`Proxy::decide_and_forward`]): block page, decision log, grants, safe search,
//!   header controls. A request with no `Host` is answered `400` with a page.
//! - Port 443 (`https_listen`): the ClientHello's SNI names the site, and the tunnel is
//!   decided exactly as a `CONNECT` to that name would be (`tunnel.rs`: the same
//!   ClientHello reader, first dial, SNI decision, ECH rule, safe-search re-dial,
//!   inspection, splice). With no SNI the original destination's address is the target
//!   (an IP host, which policy usually refuses). A refusal ends the handshake with a
//!   fatal TLS alert; for a group whose HTTPS is inspected, a site refused on its name
//!   is answered instead with the block page over TLS (a leaf from the school CA).
//!
//! Where the device was connecting to comes from the redirect (`SO_ORIGINAL_DST`). It is
//! recorded with every decision ([`Decision::original_destination`]) but never dialled
//! when there is a name: the upstream is the decided name, resolved by Gatehouse, so a
//! device cannot reach one server while naming another.
//!
//! Identity is by source subnet only: a device that has no proxy settings cannot answer
//! a `407`. A subnet that requires sign-in (`auth = "required"`) gets the default group
//! here, not its own: its group is meant for people who signed in.
//!
//! [`Decision::original_destination`]: crate::decision_log::Decision::original_destination

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use chrono::Utc;
use http::header;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use tokio::net::TcpStream;

use super::conn::ConnSignal;
use super::request::{finish, Whole};
use super::tunnel::{self, OnRefusal, Tunnel};
use super::{Body, Proxy, RequestContext};
use crate::core::host::{parse_authority, Host, Scheme, Target};
use crate::core::identity::{canonical_ip, AuthRequirement};
use crate::core::verdict::{Action, ReasonCode};

/// Which of transparent mode's listeners a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Redirected port 80: plain HTTP.
    Http,
    /// Redirected port 443: TLS.
    Https,
}

impl Listener {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
        }
    }
}

/// Where a redirected connection was going: the destination before the firewall's
/// `redirect` (`SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` for IPv6). `None` for a
/// connection that was not redirected (made to the listener's own address).
pub fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    let local = stream.local_addr().ok()?;
    // A dual-stack listener (`[::]:PORT`) sees IPv4 connections as IPv4-mapped IPv6
    // ones, whose original destination is still asked of IPv4 (SOL_IP).
    let ipv4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    };
    let local = SocketAddr::new(canonical_ip(local.ip()), local.port());
    let original = if ipv4 {
        let sin = getsockopt(stream, sockopt::OriginalDst).ok()?;
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        ))
    } else {
        let sin6 = getsockopt(stream, sockopt::Ip6tOriginalDst).ok()?;
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(sin6.sin6_addr.s6_addr),
            u16::from_be(sin6.sin6_port),
            sin6.sin6_flowinfo,
            sin6.sin6_scope_id,
        ))
    };
    (original != local).then_some(original)
}

impl Proxy {
    /// The context of a redirected connection's request: its group from the source
    /// subnet (see the module documentation), its device name, and where it was going.
    async fn transparent_context(
        &self,
        peer: SocketAddr,
        original: Option<SocketAddr>,
    ) -> RequestContext {
        let started = std::time::Instant::now();
        let snapshot = self.live.get();
        let client = canonical_ip(peer.ip());
        let identity = &snapshot.policy.identity;
        let group = match identity.subnet_for(client) {
            Some(rule) if rule.auth != AuthRequirement::Required => rule.group,
            _ => identity.default_group,
        };
        let device = self
            .devices
            .name(identity, snapshot.settings.reverse_dns.as_ref(), client)
            .await;
        RequestContext {
            snapshot,
            client,
            user: None,
            device,
            group,
            now: Utc::now(),
            started,
            original_destination: original.map(|o| o.to_string().into()),
        }
    }

    /// One request on a redirected port-80 connection: decided on its `Host` header, then
    /// forwarded or refused as a proxied plain-HTTP request is.
    pub(super) async fn handle_transparent(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        original: Option<SocketAddr>,
        signal: Arc<ConnSignal>,
    ) -> Result<Response<Body>, Infallible> {
        let ctx = self.transparent_context(peer, original).await;
        let mut completion = None;
        let resp = self.transparent_http(req, ctx, &mut completion).await;
        Ok(finish(resp, false, signal, completion))
    }

    async fn transparent_http(
        self: &Arc<Self>,
        req: Request<Incoming>,
        ctx: RequestContext,
        completion: &mut Option<super::forward::Completion>,
    ) -> Response<Body> {
        let method = req.method().as_str();
        if req.method() == Method::CONNECT {
            return self
                .refuse_unreadable(
                    &ctx,
                    method,
                    &req.uri().to_string(),
                    "This address takes web traffic redirected by the school's network, not proxy requests.",
                )
                .await;
        }
        // Origin-form, as a browser sends to a server: the Host header names the site.
        // (An absolute-form target wins over Host, as RFC 9112 §3.2.2 says.)
        let authority = match req.uri().authority() {
            Some(a) => Some(a.as_str().to_string()),
            None => req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty())
                .map(str::to_string),
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let Some(authority) = authority else {
            return self
                .refuse_unreadable(
                    &ctx,
                    method,
                    path,
                    "The request names no site (no Host header), so the web filter cannot tell where it is going.",
                )
                .await;
        };
        let (host, port) = match parse_authority(&authority) {
            Ok(x) => x,
            Err(e) => {
                let url = format!("http://{authority}{path}");
                let why = format!("Host {authority:?}: {e}");
                return self.refuse_unreadable(&ctx, method, &url, &why).await;
            }
        };
        let target = Target {
            scheme: Scheme::Http,
            host,
            port: port.unwrap_or(80),
            path: String::new(),
            query: None,
        };
        let mut full = String::with_capacity(16 + authority.len() + path.len());
        full.push_str("http://");
        full.push_str(&target.authority());
        full.push_str(path);
        let target = match Target::parse(&full) {
            Ok(t) => t,
            Err(e) => {
                return self
                    .refuse_unreadable(&ctx, method, &full, &e.to_string())
                    .await
            }
        };
        let authority = target.authority();
        self.decide_and_forward(
            req,
            ctx,
            Whole {
                target: &target,
                authority: &authority,
                url: &full,
                host_note: None,
                tls: None,
            },
            completion,
        )
        .await
    }

    /// A redirected port-443 connection: its ClientHello read, then decided as a
    /// `CONNECT` to the SNI's name (else the original destination) on the redirected
    /// port, and spliced, inspected or refused with a TLS alert.
    pub(super) async fn serve_transparent_tls(
        self: Arc<Self>,
        mut client: TcpStream,
        peer: SocketAddr,
        original: Option<SocketAddr>,
    ) {
        let ctx = self.transparent_context(peer, original).await;
        let port = original.map(|o| o.port()).unwrap_or(443);
        let original_text = ctx.original_destination.clone();
        let unnamed = original_text.as_deref().unwrap_or("-");
        let hello = {
            let asked = ctx.asked("CONNECT", unnamed);
            match tunnel::read_hello(&self, &ctx, &asked, &mut client).await {
                Some(hello) => hello,
                None => return tunnel::end_refused(&mut client, OnRefusal::Close).await,
            }
        };
        // The name decided on: the SNI's, else the address the device dialled. An
        // invalid SNI is left to the shared path, which refuses it by name.
        let host = match hello.sni.as_deref().map(Host::parse) {
            Some(Ok(host)) => Some(host),
            Some(Err(_)) | None => original.map(|o| match canonical_ip(o.ip()) {
                std::net::IpAddr::V4(v4) => Host::V4(v4),
                std::net::IpAddr::V6(v6) => Host::V6(v6),
            }),
        };
        let Some(host) = host else {
            // Neither a name nor a redirect: nothing to decide on.
            let asked = ctx.asked("CONNECT", unnamed);
            let _ = self
                .record_refusal(
                    &ctx,
                    &asked,
                    Vec::new(),
                    ReasonCode::NoSni,
                    "a TLS connection to the transparent listener that was not redirected and names no server (SNI)",
                    403,
                )
                .await;
            return tunnel::end_refused(&mut client, OnRefusal::Alert).await;
        };
        let target = Target {
            scheme: Scheme::Https,
            host,
            port,
            path: "/".to_string(),
            query: None,
        };
        let url = format!("{}:{}", target.host, target.port);
        let asked = crate::decision::Asked {
            sni: hello.sni.as_deref(),
            ..ctx.asked("CONNECT", &url)
        };
        let snap = ctx.snapshot.clone();
        let settings = &snap.settings.server;
        if !settings.tunnel_ports.contains(&target.port) {
            let _ = self
                .record_refusal(
                    &ctx,
                    &asked,
                    Vec::new(),
                    ReasonCode::Port,
                    &format!(
                        "tunnels may only reach ports {:?}; port {} is not allowed",
                        settings.tunnel_ports, target.port
                    ),
                    403,
                )
                .await;
            return tunnel::end_refused(&mut client, OnRefusal::Alert).await;
        }
        // The first decision, as on a CONNECT line naming the same host.
        let (classification, verdict) = ctx.decide_tunnel(&target);
        if verdict.action == Action::Block {
            let note = tunnel::whole_host_note(&target, &classification, &verdict);
            // A group whose HTTPS is inspected sees the block page over TLS (with a leaf
            // from the school CA, which its devices trust); any other gets the alert.
            let inspected = snap
                .policy
                .inspect(
                    ctx.group,
                    &target,
                    &classification,
                    &snap.lists,
                    snap.inspection.is_some(),
                )
                .inspected();
            let page = self
                .refuse_verdict(
                    &ctx,
                    &asked,
                    note.as_deref(),
                    &verdict,
                    &classification,
                    !inspected,
                )
                .await;
            if inspected && !target.host.is_ip() {
                let hello = hello.into_bytes();
                return self
                    .serve_refusal_page(ctx, target, hello, client, page)
                    .await;
            }
            return tunnel::end_refused(&mut client, OnRefusal::Alert).await;
        }
        let (upstream, safe_search) =
            match tunnel::first_dial(&self, &ctx, &target, &classification).await {
                Ok(dialled) => dialled,
                Err(e) => {
                    let _ = self.upstream_failure(&ctx, &asked, &e, true).await;
                    return;
                }
            };
        let tunnel = Tunnel {
            ctx,
            target,
            verdict,
            client,
            upstream,
            safe_search,
            on_refusal: OnRefusal::Alert,
        };
        tunnel::after_hello(self, tunnel, hello).await;
    }
}
