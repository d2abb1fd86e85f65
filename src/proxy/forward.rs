//! Forwarding an allowed request upstream and its response back: hop-by-hop headers
//! out (RFC 9110 §7.6.1), `Via` in, the request on a pooled connection, and bodies that
//! count their bytes so that the request's completion can be recorded when the response
//! ends (or the client goes away).
//!
//! Nothing here decides: [`Proxy::forward`] takes the permit ([`Allowed`]) that only the
//! record of an allow decision makes, and hands it to the pool, and to the splice of an
//! upgraded connection.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use super::conn::ConnSignal;
use super::pool::{Lease, Pool, UpstreamTls};
use super::upstream::UpstreamError;
use super::{tunnel, Body, BoxError, Proxy, RequestContext};
use crate::core::host::Target;
use crate::core::inspect::Enforcement;
use crate::core::safe_search::SafeSearchRewrite;
use crate::decision::{Allowed, Asked, DecisionLog};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own, removed before forwarding.
/// Constants, not strings: removing by `&str` parses the name again on every request.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names. With
/// `upgrading`, `Upgrade` and `Connection: upgrade` are kept for the upstream.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    // Most messages carry none, or only `Connection: keep-alive`: one pass over the
    // names finds what is there, and only that is removed.
    let mut remove: Vec<HeaderName> = headers
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    if remove.is_empty() {
        return;
    }
    remove.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()),
    );
    let upgrade = if upgrading {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in remove {
        headers.remove(name);
    }
    if let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Where an allowed request goes: its authority (which its `Host` header keeps) and
/// target, and the safe-search address it is dialled to instead, if any.
pub(super) struct Upstream<'a> {
    /// The target's authority, `host:port` as normalised.
    pub(super) authority: &'a str,
    /// The target.
    pub(super) target: &'a Target,
    /// The safe-search address dialled instead of the target's host.
    pub(super) safe_search: Option<&'a SafeSearchRewrite>,
    /// TLS towards the upstream: an inspected tunnel's request.
    pub(super) tls: Option<&'a UpstreamTls>,
    /// The group's header and parameter controls for this request.
    pub(super) enforcement: &'a Enforcement,
}

impl Upstream<'_> {
    /// The name dialled.
    fn host(&self) -> Cow<'_, str> {
        match self.safe_search {
            Some(rewrite) => Cow::Borrowed(&rewrite.dialled),
            None => self.target.host.text(),
        }
    }

    /// The pool key: the authority, and the name dialled when that is another one, so
    /// that a connection dialled to a safe-search address is only ever lent to requests
    /// that are to go there, and never one dialled to the engine's own address to them.
    /// Over TLS (inspected), the key starts `https://`, which no plain authority does:
    /// a plain connection is never lent to an inspected request, nor the other way.
    fn pool_key(&self) -> Cow<'_, str> {
        let scheme = if self.tls.is_some() { "https://" } else { "" };
        match self.safe_search {
            // No authority holds a space: this cannot be another authority's key.
            Some(rewrite) => Cow::Owned(format!(
                "{scheme}{} via {}",
                self.authority, rewrite.dialled
            )),
            None if self.tls.is_some() => Cow::Owned(format!("{scheme}{}", self.authority)),
            None => Cow::Borrowed(self.authority),
        }
    }
}

const VIA: &str = "1.1 gatehouse";

fn add_via(headers: &mut HeaderMap) {
    headers.append(header::VIA, HeaderValue::from_static(VIA));
}

/// How a forwarded request is recorded when its response ends, and the upstream
/// connection that carried it.
pub(super) struct Completion {
    log: DecisionLog,
    metrics: Arc<crate::metrics::Metrics>,
    /// The decision's reference (`None`: not recorded, its group fails open).
    reference: Option<u64>,
    status: u16,
    started: std::time::Instant,
    up: Arc<UpCount>,
    /// Given back to the pool only when both bodies ended cleanly.
    lease: Option<(Arc<Pool>, Lease)>,
}

/// What a forwarded request's body has carried upstream.
#[derive(Default)]
pub struct UpCount {
    bytes: AtomicU64,
    done: AtomicBool,
}

/// Every response body goes out through this: it tells the connection guard when the
/// response is complete (so the keep-alive idle limit starts then, not before), and for
/// forwarded requests counts the bytes and records the completion when the body ends or
/// is dropped (the client went away).
pub(super) struct Tracked {
    pub(super) inner: Body,
    pub(super) signal: Option<Arc<ConnSignal>>,
    pub(super) bytes: u64,
    pub(super) completion: Option<Completion>,
}

impl Tracked {
    /// `clean`: the body reached its end (not an error, not dropped half-way).
    fn finish(&mut self, clean: bool) {
        if let Some(s) = self.signal.take() {
            s.response_done();
        }
        if let Some(mut c) = self.completion.take() {
            if let Some((pool, lease)) = c.lease.take() {
                if clean && c.up.done.load(Ordering::Acquire) {
                    pool.put(lease);
                }
            }
            let up = c.up.bytes.load(Ordering::Relaxed);
            c.metrics.bytes.with_label_values(&["up"]).inc_by(up);
            c.metrics
                .bytes
                .with_label_values(&["down"])
                .inc_by(self.bytes);
            c.log
                .completed(c.reference, c.status, up, self.bytes, c.started.elapsed());
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that counts the bytes it carries upstream, and notes its end.
pub struct CountUp {
    inner: Incoming,
    count: Arc<UpCount>,
}

impl HttpBody for CountUp {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.count
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                // hyper stops polling once the body says it has ended.
                if self.inner.is_end_stream() {
                    self.count.done.store(true, Ordering::Release);
                }
            }
            Poll::Ready(None) => self.count.done.store(true, Ordering::Release),
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended, so a body dropped with
        // nothing left to send ended cleanly.
        let clean = self.inner.is_end_stream();
        self.finish(clean);
    }
}

impl Proxy {
    /// Sends an allowed request upstream (origin-form, on a pooled connection) and
    /// returns the response to relay; `completion` is set to record how it ends. The
    /// permit is the recorded decision that allowed it; an upgrade (`101`) spends it on
    /// the splice that follows.
    pub(super) async fn forward(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        ctx: &RequestContext,
        permit: Allowed,
        upstream: &Upstream<'_>,
        asked: &Asked<'_>,
        completion: &mut Option<Completion>,
    ) -> Response<Body> {
        let authority = upstream.authority;
        let snap = &ctx.snapshot;
        let upgrading = req.headers().contains_key(header::UPGRADE);
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrading);
        if let Ok(v) = HeaderValue::from_str(authority) {
            parts.headers.insert(header::HOST, v);
        }
        add_via(&mut parts.headers);
        // The group's controls: headers set (replacing any the client sent, so a pupil
        // cannot send a weaker `YouTube-Restrict` or another tenant list), a query
        // rewritten.
        for (name, value) in &upstream.enforcement.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                parts.headers.insert(HeaderName::from_static(name), v);
            }
        }
        // Origin-form upstream (RFC 9112 §3.2.1): the path and query only.
        parts.uri = match (&upstream.enforcement.query, parts.uri.path_and_query()) {
            (Some(query), pq) => {
                let path = pq.map(|p| p.path()).unwrap_or("/");
                Uri::try_from(format!("{path}?{query}")).unwrap_or_else(|_| Uri::from_static("/"))
            }
            (None, Some(pq)) => Uri::from(pq.clone()),
            (None, None) => Uri::from_static("/"),
        };
        let started = std::time::Instant::now();
        let timeout = snap.settings.server.upstream_timeout;
        let up = Arc::new(UpCount::default());
        if body.is_end_stream() {
            up.done.store(true, Ordering::Release);
        }
        let body = CountUp {
            inner: body,
            count: up.clone(),
        };
        let host = upstream.host();
        let result = tokio::time::timeout(
            timeout,
            self.pool.send(
                &permit,
                || self.dialer(snap),
                &upstream.pool_key(),
                &host,
                upstream.target.port,
                upstream.tls,
                Request::from_parts(parts, body),
            ),
        )
        .await;
        self.metrics
            .upstream_seconds
            .observe(started.elapsed().as_secs_f64());
        let resp = match result {
            Err(_) => {
                let e = UpstreamError::Timeout {
                    host: host.into_owned(),
                };
                return self.upstream_failure(ctx, asked, &e, false).await;
            }
            Ok(Err(e)) => return self.upstream_failure(ctx, asked, &e, false).await,
            Ok(Ok(r)) => r,
        };
        let (mut resp, lease) = resp;
        let status = resp.status();
        let reference = permit.reference();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                let settings = snap.settings.server.clone();
                self.tracker.spawn(async move {
                    if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                        tunnel::splice(
                            permit,
                            TokioIo::new(c),
                            TokioIo::new(u),
                            settings.tunnel_idle_timeout,
                            settings.tunnel_max_lifetime,
                        )
                        .await;
                    }
                });
            }
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(
            &mut parts.headers,
            status == StatusCode::SWITCHING_PROTOCOLS,
        );
        add_via(&mut parts.headers);
        let resp = Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed());
        *completion = Some(Completion {
            log: self.log.clone(),
            metrics: self.metrics.clone(),
            reference,
            status: status.as_u16(),
            started,
            up,
            // An upgraded connection is no longer HTTP; it is never reused.
            lease: (status != StatusCode::SWITCHING_PROTOCOLS).then(|| (self.pool.clone(), lease)),
        });
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in lines {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_table() {
        // (headers in, upgrading, headers left)
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, &'a [&'a str]);
        let cases: &[Case] = &[
            (
                &[("host", "a"), ("accept", "*/*")],
                false,
                &["accept: */*", "host: a"],
            ),
            (
                &[("host", "a"), ("connection", "keep-alive")],
                false,
                &["host: a"],
            ),
            (
                &[
                    ("connection", "Keep-Alive"),
                    ("keep-alive", "timeout=5"),
                    ("etag", "x"),
                ],
                false,
                &["etag: x"],
            ),
            // Headers the Connection field names go, in any case and spacing, over
            // several Connection fields.
            (
                &[
                    ("connection", "close, X-Secret"),
                    ("connection", " x-other ,"),
                    ("x-secret", "1"),
                    ("X-Other", "2"),
                    ("x-kept", "3"),
                ],
                false,
                &["x-kept: 3"],
            ),
            (
                &[
                    ("proxy-connection", "keep-alive"),
                    ("proxy-authorization", "Basic eA=="),
                    ("te", "trailers"),
                    ("trailer", "x"),
                    ("transfer-encoding", "chunked"),
                    ("upgrade", "h2c"),
                    ("via", "1.1 other"),
                ],
                false,
                &["via: 1.1 other"],
            ),
            // Upgrading keeps Upgrade and says so in Connection, nothing else.
            (
                &[
                    ("connection", "Upgrade, X-Secret"),
                    ("upgrade", "websocket"),
                    ("x-secret", "1"),
                ],
                true,
                &["connection: upgrade", "upgrade: websocket"],
            ),
            // A token that is no header name is ignored.
            (
                &[("connection", "bad name, x-a"), ("x-a", "1"), ("x-b", "2")],
                false,
                &["x-b: 2"],
            ),
        ];
        for (input, upgrading, left) in cases {
            let mut h = headers(input);
            strip_hop_by_hop(&mut h, *upgrading);
            assert_eq!(names(&h), *left, "{input:?}");
        }
    }
}
