//! An inspected tunnel: the client's TLS is accepted with a leaf certificate minted for
//! the name it asked for (its SNI, or the CONNECT host when it sent none) and signed by
//! the school CA; HTTP/1.1 or HTTP/2 inside, as ALPN chose (hyper-util's auto server);
//! and every request inside goes through the same path as plain HTTP
//! ([`Proxy::decide_and_forward`]): its full URL classified and decided, recorded, then
//! refused with the block page (over HTTPS) or sent upstream over TLS with full
//! verification — a site whose certificate does not verify gets a page saying why.
//!
//! A request inside must be for the tunnel's own host: the leaf names only that host, so
//! a browser never sends another one here, and anything else (a `Host` header naming
//! another site, to dodge the decision) is answered `421 Misdirected Request`.
//!
//! WebSocket upgrades inside work as for plain HTTP (HTTP/1.1 `Upgrade`): the forward
//! path splices the upgraded connection.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use chrono::Utc;
use http::header;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::forward::Tracked;
use super::pool::UpstreamTls;
use super::request::Whole;
use super::{pages, Body, Proxy, RequestContext};
use crate::core::host::{parse_authority, Host, Target};
use crate::decision::Allowed;
use crate::decision_log::ReasonCode;
use crate::inspection::Lookup;

/// What every request inside one inspected tunnel shares.
struct Tunnel {
    /// The host the leaf was minted for, which every request must name.
    host: Host,
    /// The tunnel's port.
    port: u16,
    /// TLS towards the upstream.
    upstream: UpstreamTls,
}

impl Proxy {
    /// Serves an inspected tunnel until the client closes it or its lifetime ends.
    /// `hello` is the ClientHello already read from `client`; `permit` is the recorded
    /// decision on the tunnel.
    pub(super) async fn serve_inspected<C>(
        self: Arc<Self>,
        ctx: RequestContext,
        target: Target,
        hello: Vec<u8>,
        client: C,
        permit: Allowed,
    ) where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some((stream, upstream)) = self.accept_tls(&ctx, &target, hello, client).await else {
            return;
        };
        let settings = ctx.snapshot.settings.server.clone();
        let tunnel = Arc::new(Tunnel {
            host: target.host.clone(),
            port: target.port,
            upstream,
        });
        let reference = permit.reference();
        let started = std::time::Instant::now();
        let _open = crate::metrics::GaugeGuard::open(&self.metrics.tunnels);
        let client = ctx.client;
        let service = {
            let proxy = self.clone();
            service_fn(move |req| {
                let (proxy, ctx, tunnel) = (proxy.clone(), ctx.clone(), tunnel.clone());
                async move { Ok::<_, Infallible>(proxy.inspected_request(req, ctx, &tunnel).await) }
            })
        };
        let conn = server_builder(&settings)
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        tokio::select! {
            r = conn => {
                if let Err(e) = r {
                    tracing::debug!(client = %client, error = %e, "inspected connection ended");
                }
            }
            _ = tokio::time::sleep(settings.tunnel_max_lifetime) => {}
        }
        // The tunnel's own completion: its requests carry their own bytes.
        self.log.completed(reference, 200, 0, 0, started.elapsed());
        drop(permit);
    }

    /// Answers every request on a refused TLS connection with `page` (the block page of
    /// its recorded refusal), over TLS with a leaf from the school CA: transparent mode,
    /// for a group whose HTTPS is inspected, so that the device shows why rather than a
    /// connection error. Nothing is dialled or forwarded.
    pub(super) async fn serve_refusal_page<C>(
        self: Arc<Self>,
        ctx: RequestContext,
        target: Target,
        hello: Vec<u8>,
        client: C,
        page: Response<Body>,
    ) where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (parts, body) = page.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return;
        };
        let Some((stream, _)) = self.accept_tls(&ctx, &target, hello, client).await else {
            return;
        };
        let settings = ctx.snapshot.settings.server.clone();
        let service = service_fn(move |_req: Request<Incoming>| {
            let mut resp = Response::new(super::full(body.clone()));
            *resp.status_mut() = parts.status;
            *resp.headers_mut() = parts.headers.clone();
            async move { Ok::<_, Infallible>(resp) }
        });
        let builder = server_builder(&settings);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            r = conn => {
                if let Err(e) = r {
                    tracing::debug!(client = %ctx.client, error = %e, "refused TLS connection ended");
                }
            }
            _ = tokio::time::sleep(settings.idle_timeout) => {}
        }
    }

    /// The client's TLS accepted with a leaf for `target`'s host, signed by the school
    /// CA (`hello`, already read, put back in front), and TLS towards its upstream;
    /// `None` when there is no CA, no leaf, or the handshake fails (most often a device
    /// that does not trust the school CA).
    async fn accept_tls<C>(
        &self,
        ctx: &RequestContext,
        target: &Target,
        hello: Vec<u8>,
        client: C,
    ) -> Option<(tokio_rustls::server::TlsStream<Rewind<C>>, UpstreamTls)>
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let snap = ctx.snapshot.clone();
        let Some(tls) = snap.inspection.clone() else {
            // Only a snapshot with the CA decides to inspect.
            return None;
        };
        let leaf = match self.leaves.get(&tls, &target.host) {
            Ok((leaf, lookup)) => {
                let result = match lookup {
                    Lookup::Hit => "hit",
                    Lookup::Miss => "miss",
                };
                self.metrics.leaf_cache.with_label_values(&[result]).inc();
                leaf
            }
            Err(e) => {
                self.metrics.leaf_cache.with_label_values(&["error"]).inc();
                tracing::warn!(target: "gatehouse::inspection", host = %target.host, error = %e, "no leaf certificate; tunnel closed");
                return None;
            }
        };
        let name = crate::inspection::server_name(&target.host)?;
        let config = match tls.server_config(leaf, &self.sessions) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::warn!(target: "gatehouse::inspection", error = %e, "inspection TLS settings");
                return None;
            }
        };
        let settings = &snap.settings.server;
        let io = Rewind {
            prefix: Bytes::from(hello),
            inner: client,
        };
        let accepted = tokio::time::timeout(
            settings.client_hello_timeout,
            tokio_rustls::TlsAcceptor::from(config).accept(io),
        )
        .await;
        let stream = match accepted {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                // Most often a device that does not trust the school CA.
                tracing::info!(target: "gatehouse::inspection", client = %ctx.client, host = %target.host, error = %e, "inspected tunnel: the client's TLS handshake failed");
                return None;
            }
            Err(_) => return None,
        };
        Some((
            stream,
            UpstreamTls {
                config: tls.upstream.clone(),
                name,
            },
        ))
    }

    /// One request inside an inspected tunnel.
    async fn inspected_request(
        self: &Arc<Self>,
        req: Request<Incoming>,
        mut ctx: RequestContext,
        tunnel: &Tunnel,
    ) -> Response<Body> {
        ctx.now = Utc::now();
        ctx.started = std::time::Instant::now();
        // HTTP/2 carries the authority in the request target; HTTP/1.1 in `Host`.
        let authority = match req.uri().authority() {
            Some(a) => Some(a.as_str().to_string()),
            None => req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string),
        };
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // What a refusal below records: the URL as asked, on the tunnel's host when
        // the request names none it can use.
        let asked_url = |host: &str| format!("https://{host}{pq}");
        let method = req.method().as_str();
        let Some(authority) = authority else {
            let url = asked_url(&tunnel.host.to_string());
            return self
                .refuse_unreadable(&ctx, method, &url, "The request names no host.")
                .await;
        };
        let (host, port) = match parse_authority(&authority) {
            Ok(x) => x,
            Err(e) => {
                let why = format!("host {authority:?}: {e}");
                return self
                    .refuse_unreadable(&ctx, method, &asked_url(&authority), &why)
                    .await;
            }
        };
        if host != tunnel.host || port.is_some_and(|p| p != tunnel.port) {
            // Another site's request on this site's connection: domain fronting, or a
            // browser reusing a connection it should not. Recorded, as a way round the
            // decision; RFC 9110 §15.5.20 lets the client retry on a connection of its
            // own, where that site is decided.
            let why = format!(
                "This connection is for {}; requests for another site need their own.",
                tunnel.host
            );
            let url = asked_url(&authority);
            let asked = ctx.asked(method, &url);
            let _ = self
                .record_refusal(&ctx, &asked, Vec::new(), ReasonCode::Misdirected, &why, 421)
                .await;
            return Proxy::page(
                StatusCode::MISDIRECTED_REQUEST,
                pages::error_page(
                    &ctx.snapshot.policy.school,
                    "Wrong connection",
                    &authority,
                    &why,
                ),
            );
        }
        let mut full = String::with_capacity(16 + authority.len() + pq.len());
        full.push_str("https://");
        tunnel.host.push_to(&mut full);
        if tunnel.port != 443 {
            full.push(':');
            full.push_str(itoa::Buffer::new().format(tunnel.port));
        }
        full.push_str(pq);
        let target = match Target::parse(&full) {
            Ok(t) => t,
            Err(e) => {
                return self
                    .refuse_unreadable(&ctx, method, &full, &e.to_string())
                    .await
            }
        };
        let authority = target.authority();
        let mut completion = None;
        let resp = self
            .decide_and_forward(
                req,
                ctx,
                Whole {
                    target: &target,
                    authority: &authority,
                    url: &full,
                    host_note: None,
                    tls: Some(&tunnel.upstream),
                },
                &mut completion,
            )
            .await;
        let (parts, body) = resp.into_parts();
        let body = Tracked {
            inner: body,
            signal: None,
            bytes: 0,
            completion,
        }
        .boxed();
        Response::from_parts(parts, body)
    }
}

/// The HTTP/1.1 and HTTP/2 server (as ALPN chose) for a client's TLS accepted with a
/// leaf: header limits and timeouts as the proxy's own listener.
fn server_builder(
    settings: &crate::settings::ServerSettings,
) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.idle_timeout)
        .max_buf_size((settings.max_header_bytes * 2).max(16 * 1024));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes as u32);
    builder
}

/// The client's stream with the ClientHello, already read to decide on its SNI, put
/// back in front.
struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

write_through!(Rewind);
