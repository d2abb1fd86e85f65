//! The proxy: `gatehouse run`. Accepts connections, identifies the requester, classifies
//! and decides every request, records the verdict, then forwards it, tunnels it, or
//! answers with the block page.
//!
//! One [`Proxy`] value is shared by every connection. The policy and lists are read from
//! the [`Live`] snapshot once per request, so a reload never changes the rules under a
//! request in flight. Nothing is forwarded without a verdict: `forward` and the tunnel
//! both take the [`Verdict`] that allowed them, and the record of it is handed to the
//! decision log first.

pub mod admin;
pub mod auth;
pub mod conn;
pub mod pages;
pub mod pool;
pub mod tunnel;
pub mod upstream;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::group::GroupId;
use crate::core::host::{parse_authority, Scheme, Target};
use crate::core::identity::{canonical_ip, AuthRequirement};
use crate::core::verdict::{Action, ReasonCode, Requester, Verdict};
use crate::decision::{format_reference, DecisionLog};
use crate::decision_log::writer::LogSettings;
use crate::decision_log::{Decision, StoredAction};
use crate::lists::CacheMode;
use crate::snapshot::{self, Live, Snapshot};

use self::auth::{AuthCache, AuthResult};
use self::conn::{ConnLimits, ConnSignal, GuardedIo};
use self::pool::{Lease, Pool, PoolSettings};
use self::upstream::{Dialer, UpstreamError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type: upstream bodies and our own pages alike.
pub type Body = BoxBody<Bytes, BoxError>;

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Counts one open connection or tunnel in a gauge until dropped.
pub struct GaugeGuard(prometheus::IntGauge);

impl GaugeGuard {
    /// Increments `gauge` now and decrements it when the guard drops.
    pub fn open(gauge: &prometheus::IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Everything the connections share.
pub struct Proxy {
    live: Arc<Live>,
    config: PathBuf,
    /// Where verdicts go before anything is forwarded.
    pub log: DecisionLog,
    auth: AuthCache,
    pool: Arc<Pool>,
    /// Metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    tracker: TaskTracker,
    own: Arc<Vec<SocketAddr>>,
    after_load: fn(),
}

/// Who is asking and what they see, fixed for one request.
#[derive(Clone)]
pub struct RequestContext {
    snapshot: Arc<Snapshot>,
    client: IpAddr,
    user: Option<String>,
    group: GroupId,
    now: DateTime<Utc>,
    started: std::time::Instant,
}

impl RequestContext {
    fn requester(&self) -> Requester<'_> {
        Requester {
            group: self.group,
            user: self.user.as_deref(),
            client: Some(self.client),
        }
    }
}

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

const VIA: &str = "1.1 gatehouse";

fn add_via(headers: &mut HeaderMap) {
    headers.append(header::VIA, HeaderValue::from_static(VIA));
}

/// How a forwarded request is recorded when its response ends, and the upstream
/// connection that carried it.
struct Completion {
    log: DecisionLog,
    metrics: Arc<crate::metrics::Metrics>,
    reference: u64,
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
struct Tracked {
    inner: Body,
    signal: Option<Arc<ConnSignal>>,
    bytes: u64,
    completion: Option<Completion>,
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
    /// Counts a decision in the metrics and hands its record to the decision log.
    async fn log_decision(
        &self,
        ctx: &RequestContext,
        decision: Decision,
        explanation: &str,
    ) -> Result<u64, crate::decision::LogError> {
        let category = decision
            .categories
            .first()
            .map(String::as_str)
            .unwrap_or("none");
        self.metrics
            .requests
            .with_label_values(&[decision.group.as_str(), decision.action.as_str(), category])
            .inc();
        let result = self.log.record(decision, explanation).await;
        self.metrics
            .decision_seconds
            .observe(ctx.started.elapsed().as_secs_f64());
        result
    }

    fn dialer(&self, snap: &Snapshot) -> Dialer {
        Dialer::for_snapshot(snap, self.own.clone())
    }

    fn local_time(&self, snap: &Snapshot, at: DateTime<Utc>) -> String {
        // Block pages come in bursts (a blocked page's scripts and images): the time as
        // shown changes once a second, so each thread formats it once a second.
        thread_local! {
            static SHOWN: std::cell::RefCell<(i64, Option<chrono_tz::Tz>, String)> =
                const { std::cell::RefCell::new((0, None, String::new())) };
        }
        let tz = snap.policy.timezone;
        SHOWN.with_borrow_mut(|(second, zone, text)| {
            if *second != at.timestamp() || *zone != Some(tz) {
                *text = at
                    .with_timezone(&tz)
                    .format("%a %-d %b %Y %H:%M:%S")
                    .to_string();
                *second = at.timestamp();
                *zone = Some(tz);
            }
            text.clone()
        })
    }

    fn page(status: StatusCode, html: String) -> Response<Body> {
        let mut resp = Response::new(full(html));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    fn text(status: StatusCode, text: String) -> Response<Body> {
        let mut resp = Response::new(full(text));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }

    fn bad_request(&self, ctx: &RequestContext, why: &str) -> Response<Body> {
        let mut resp = Proxy::page(
            StatusCode::BAD_REQUEST,
            pages::error_page(&ctx.snapshot.policy.school, "Bad request", "-", why),
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }

    /// Records a refusal that is not a policy verdict (a port, a protocol, a missing SNI).
    #[allow(clippy::too_many_arguments)]
    async fn record_refusal(
        &self,
        ctx: &RequestContext,
        method: &str,
        url: &str,
        sni: Option<String>,
        categories: Vec<String>,
        reason: ReasonCode,
        explanation: &str,
        status: u16,
    ) -> Option<u64> {
        let record = Decision {
            client: ctx.client,
            user: ctx.user.clone(),
            group: ctx.snapshot.policy.group(ctx.group).name.clone(),
            method: method.to_string(),
            url: url.to_string(),
            sni,
            categories,
            action: StoredAction::Block,
            reason,
            grant: None,
            status,
            terms: Vec::new(),
        };
        self.log_decision(ctx, record, explanation).await.ok()
    }

    /// Refuses with the block page (HTML) or its text (CONNECT), recording it first.
    #[allow(clippy::too_many_arguments)]
    async fn refuse(
        &self,
        ctx: &RequestContext,
        method: &str,
        url: &str,
        category: Option<&str>,
        categories: Vec<String>,
        reason: ReasonCode,
        explanation: String,
        as_text: bool,
    ) -> Response<Body> {
        // A refusal stands even when it cannot be logged; only its reference is missing.
        let reference = match self
            .record_refusal(
                ctx,
                method,
                url,
                None,
                categories,
                reason,
                &explanation,
                403,
            )
            .await
        {
            Some(seq) => format_reference(seq),
            None => "unavailable (the log could not be written)".to_string(),
        };
        let snap = &ctx.snapshot;
        let time = self.local_time(snap, ctx.now);
        let info = pages::BlockInfo {
            school: &snap.policy.school,
            site: url,
            category,
            explanation: &explanation,
            group: &snap.policy.group(ctx.group).name,
            time: &time,
            reference: &reference,
        };
        let mut resp = if as_text {
            Proxy::text(StatusCode::FORBIDDEN, pages::block_text(&info))
        } else {
            Proxy::page(StatusCode::FORBIDDEN, pages::block_page(&info))
        };
        if let Ok(v) = HeaderValue::from_str(&reference) {
            resp.headers_mut().insert("x-gatehouse-reference", v);
        }
        resp
    }

    #[allow(clippy::too_many_arguments)]
    async fn refuse_verdict(
        &self,
        ctx: &RequestContext,
        method: &str,
        url: &str,
        host_note: Option<&str>,
        verdict: &Verdict,
        classification: &crate::core::classify::Classification,
        as_text: bool,
    ) -> Response<Body> {
        let policy = &ctx.snapshot.policy;
        let names: Vec<String> = policy
            .category_names(verdict.categories)
            .iter()
            .map(|s| s.to_string())
            .collect();
        let shown = match verdict.reason {
            crate::core::policy::Reason::Illegal { category }
            | crate::core::policy::Reason::Category { category, .. } => {
                Some(policy.category(category).name.as_str())
            }
            _ => None,
        };
        let mut explanation = policy.explain(verdict);
        if let Some(note) = host_note {
            explanation.push_str("; ");
            explanation.push_str(note);
        }
        let mut resp = self
            .refuse(
                ctx,
                method,
                url,
                shown,
                names,
                verdict.reason.code(),
                explanation,
                as_text,
            )
            .await;
        if !classification.terms.is_empty() {
            tracing::info!(target: "gatehouse::decision", url, terms = ?classification.terms.iter().map(|t| &t.term).collect::<Vec<_>>(), "search terms of concern");
        }
        if as_text {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    fn log_unavailable(&self, ctx: &RequestContext) -> Response<Body> {
        Proxy::page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::error_page(
                &ctx.snapshot.policy.school,
                "Filtering is unavailable",
                "-",
                "The web filter cannot record requests at the moment, so it is not letting any through.",
            ),
        )
    }

    async fn upstream_failure(
        &self,
        ctx: &RequestContext,
        method: &str,
        url: &str,
        e: &UpstreamError,
        as_text: bool,
    ) -> Response<Body> {
        let (status, title) = match e {
            UpstreamError::Timeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "The site took too long to answer",
            ),
            UpstreamError::Internal { .. } => (
                StatusCode::FORBIDDEN,
                "This address is on the school's own network",
            ),
            UpstreamError::Dns { .. } => (StatusCode::BAD_GATEWAY, "The site could not be found"),
            UpstreamError::Refused { .. } => {
                (StatusCode::BAD_GATEWAY, "The site could not be reached")
            }
        };
        tracing::info!(target: "gatehouse::upstream", kind = e.kind(), method, url, error = %e, "upstream failure");
        self.metrics
            .upstream_errors
            .with_label_values(&[e.kind()])
            .inc();
        if let UpstreamError::Internal { .. } = e {
            // A pivot attempt is a decision worth keeping.
            let _ = self
                .record_refusal(
                    ctx,
                    method,
                    url,
                    None,
                    Vec::new(),
                    ReasonCode::InternalDestination,
                    &e.to_string(),
                    403,
                )
                .await;
        }
        if as_text {
            let mut r = Proxy::text(status, format!("{title}: {e}\n"));
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        Proxy::page(
            status,
            pages::error_page(&ctx.snapshot.policy.school, title, url, &e.to_string()),
        )
    }

    fn challenge(&self, snap: &Snapshot) -> Response<Body> {
        self.metrics.auth_challenges.inc();
        let mut resp = Proxy::page(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            pages::auth_page(&snap.policy.school),
        );
        let realm = format!(
            "Basic realm=\"Gatehouse ({})\"",
            snap.policy.school.replace('"', "'")
        );
        if let Ok(v) = HeaderValue::from_str(&realm) {
            resp.headers_mut().insert(header::PROXY_AUTHENTICATE, v);
        }
        resp
    }

    /// Handles one request from a client connection.
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        signal: Arc<ConnSignal>,
    ) -> Result<Response<Body>, Infallible> {
        let started = std::time::Instant::now();
        let snapshot = self.live.get();
        let client = canonical_ip(peer.ip());
        let identity = &snapshot.policy.identity;
        let auth_header = req
            .headers()
            .get(header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let subnet = identity.subnet_for(client);
        let (group, user) = match self.auth.check(auth_header, identity).await {
            AuthResult::User(name) => match identity.user(&name) {
                Some(u) => (u.group, Some(name)),
                None => return Ok(self.challenge(&snapshot)),
            },
            AuthResult::Failed => {
                self.metrics.auth_failures.inc();
                tracing::info!(target: "gatehouse::auth", client = %client, "proxy authentication failed");
                // Wrong credentials are recorded (a burst of them is a bypass attempt the
                // DSL sees); a browser's first, credential-less request is not.
                let group = subnet.map(|r| r.group).unwrap_or(identity.default_group);
                let decision = Decision {
                    client,
                    user: None,
                    group: snapshot.policy.group(group).name.clone(),
                    method: req.method().to_string(),
                    url: req.uri().to_string(),
                    sni: None,
                    categories: Vec::new(),
                    action: StoredAction::Block,
                    reason: ReasonCode::AuthFailed,
                    grant: None,
                    status: 407,
                    terms: Vec::new(),
                };
                let ctx = RequestContext {
                    snapshot: snapshot.clone(),
                    client,
                    user: None,
                    group,
                    now: Utc::now(),
                    started,
                };
                let _ = self
                    .log_decision(&ctx, decision, "proxy authentication failed")
                    .await;
                return Ok(self.challenge(&snapshot));
            }
            AuthResult::Missing => match subnet {
                Some(rule) if rule.auth == AuthRequirement::Required => {
                    return Ok(self.challenge(&snapshot))
                }
                Some(rule) => (rule.group, None),
                None => (identity.default_group, None),
            },
        };
        let ctx = RequestContext {
            snapshot: snapshot.clone(),
            client,
            user,
            group,
            now: Utc::now(),
            started,
        };
        let is_connect = req.method() == Method::CONNECT;
        let mut completion = None;
        let mut resp = if is_connect {
            tunnel::handle(self.clone(), req, ctx).await
        } else {
            self.http(req, ctx, &mut completion).await
        };
        // After a chunked body, a CONNECT or an Upgrade the guard no longer follows the
        // request stream, so the connection must not carry another request — but a
        // tunnel or upgrade that succeeded is no longer HTTP at all.
        let switching = (is_connect && resp.status() == StatusCode::OK)
            || resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if signal.must_close() && !switching {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let (parts, body) = resp.into_parts();
        let body = Tracked {
            inner: body,
            signal: Some(signal),
            bytes: 0,
            completion,
        }
        .boxed();
        Ok(Response::from_parts(parts, body))
    }

    async fn http(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        ctx: RequestContext,
        completion: &mut Option<Completion>,
    ) -> Response<Body> {
        let uri = req.uri().clone();
        if uri.scheme().is_none() || uri.authority().is_none() {
            return self.bad_request(
                &ctx,
                "This is a web proxy: requests must name the whole address (absolute-form), as browsers do when set to use a proxy.",
            );
        }
        let full_uri = {
            let (scheme, authority) = (uri.scheme_str().unwrap_or(""), uri.authority());
            let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let authority = authority.map(|a| a.as_str()).unwrap_or("");
            let mut s = String::with_capacity(scheme.len() + 3 + authority.len() + pq.len());
            s.push_str(scheme);
            s.push_str("://");
            s.push_str(authority);
            s.push_str(pq);
            s
        };
        let target = match Target::parse(&full_uri) {
            Ok(t) => t,
            Err(e) => return self.bad_request(&ctx, &e.to_string()),
        };
        if target.scheme != Scheme::Http {
            return self.bad_request(
                &ctx,
                "Only http:// addresses are forwarded this way; browsers use CONNECT for https.",
            );
        }
        // RFC 9112 §3.2.2: for absolute-form the target wins over Host; a Host naming
        // another host is rewritten, and noted in the record.
        let host_note = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            // The usual case, a Host header spelt exactly as the target's authority,
            // needs no parsing.
            .filter(|h| Some(*h) != uri.authority().map(|a| a.as_str()))
            .and_then(|h| match parse_authority(h) {
                Ok((host, _)) if host == target.host => None,
                _ => Some(format!("Host header {h:?} rewritten to {}", target.host)),
            });
        let snap = ctx.snapshot.clone();
        let policy = &snap.policy;
        let classification = snap.classify(&target);
        let verdict = policy.decide(
            &ctx.requester(),
            &target,
            &classification,
            &snap.grants.grants,
            ctx.now,
        );
        let authority = target.authority();
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut url = String::with_capacity(7 + authority.len() + path.len());
        url.push_str("http://");
        url.push_str(&authority);
        url.push_str(path);
        if verdict.action == Action::Block {
            return self
                .refuse_verdict(
                    &ctx,
                    req.method().as_str(),
                    &url,
                    host_note.as_deref(),
                    &verdict,
                    &classification,
                    false,
                )
                .await;
        }
        let mut explanation = policy.explain(&verdict);
        if let Some(note) = &host_note {
            explanation.push_str("; ");
            explanation.push_str(note);
        }
        let record = Decision {
            client: ctx.client,
            user: ctx.user.clone(),
            group: policy.group(ctx.group).name.clone(),
            method: req.method().to_string(),
            url: url.clone(),
            sni: None,
            categories: policy
                .category_names(verdict.categories)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            action: StoredAction::Allow,
            reason: verdict.reason.code(),
            grant: verdict.grant.as_ref().map(|g| g.ticket.to_string()),
            status: 0,
            terms: classification
                .terms
                .iter()
                .map(|t| t.term.clone())
                .collect(),
        };
        let reference = match self.log_decision(&ctx, record, &explanation).await {
            Ok(seq) => seq,
            Err(e) if policy.group(ctx.group).fail_closed => {
                tracing::warn!(target: "gatehouse::decision", group = %policy.group(ctx.group).name, error = %e, "refused: the decision log cannot be written");
                return self.log_unavailable(&ctx);
            }
            // Groups configured `on_log_failure = "allow"` keep working; the record is
            // counted as lost.
            Err(_) => 0,
        };

        // Forward.
        let upgrading = req.headers().contains_key(header::UPGRADE);
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrading);
        if let Ok(v) = HeaderValue::from_str(&authority) {
            parts.headers.insert(header::HOST, v);
        }
        add_via(&mut parts.headers);
        // Origin-form upstream (RFC 9112 §3.2.1): the path and query only.
        parts.uri = match uri.path_and_query() {
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        };
        let started = std::time::Instant::now();
        let timeout = ctx.snapshot.settings.server.upstream_timeout;
        let up = Arc::new(UpCount::default());
        if body.is_end_stream() {
            up.done.store(true, Ordering::Release);
        }
        let body = CountUp {
            inner: body,
            count: up.clone(),
        };
        let result = tokio::time::timeout(
            timeout,
            self.pool.send(
                || self.dialer(&snap),
                &authority,
                &target,
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
                    host: target.host.to_string(),
                };
                return self.upstream_failure(&ctx, "GET", &url, &e, false).await;
            }
            Ok(Err(e)) => return self.upstream_failure(&ctx, "GET", &url, &e, false).await,
            Ok(Ok(r)) => r,
        };
        let (mut resp, lease) = resp;
        let status = resp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                let settings = ctx.snapshot.settings.server.clone();
                self.tracker.spawn(async move {
                    if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                        tunnel::splice(
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

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

/// Why `gatehouse run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The policy did not load.
    #[error("{0}")]
    Policy(#[from] crate::core::config::ConfigErrors),
    /// The listener could not be opened.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The decision log could not be opened.
    #[error("decision log: {0}")]
    Log(String),
    /// The runtime or a signal handler failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The connection caps: a global limit derived from the file-descriptor limit, and one
/// per client address, both refusing excess connections at once.
struct Caps {
    global: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    per_client_max: usize,
}

struct ClientSlot<'a> {
    caps: &'a Caps,
    ip: IpAddr,
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.caps.per_client.lock() {
            if let Some(n) = map.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
    }
}

impl Caps {
    fn take(&self, ip: IpAddr) -> Option<ClientSlot<'_>> {
        let mut map = self.per_client.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= self.per_client_max {
            return None;
        }
        *n += 1;
        Some(ClientSlot { caps: self, ip })
    }
}

/// The file-descriptor limit, raised to the hard limit, and the connection cap it allows:
/// each proxied connection may hold two descriptors (client and upstream), and some are
/// kept back for lists, logs and the admin listener.
fn connection_cap(configured: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let derived = (limit.saturating_sub(64) / 2).max(16) as usize;
    if configured == 0 {
        derived
    } else {
        configured.min(derived)
    }
}

/// Loads policy and lists (on a blocking thread), then runs `after_load` there.
fn load_then(
    path: &std::path::Path,
    after_load: fn(),
) -> Result<Snapshot, crate::core::config::ConfigErrors> {
    let result = snapshot::load(path, CacheMode::Use);
    after_load();
    result
}

/// Runs the proxy until SIGTERM or SIGINT. Returns when in-flight work has finished or
/// the grace period has passed.
///
/// `after_load` runs on the loading thread after every load of policy and lists (start-up
/// and each reload), once the build's scratch memory is freed: the binary uses it to have
/// its allocator hand that memory back to the system, since compiling a million domains
/// briefly needs several times the index's size.
pub async fn run(config: PathBuf, after_load: fn()) -> Result<(), RunError> {
    let path = config.clone();
    let snap = tokio::task::spawn_blocking(move || load_then(&path, after_load))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    for w in &snap.report.warnings {
        tracing::warn!(file = %w.file.display(), line = w.line, "{}", w.message);
    }
    let settings = snap.settings.server.clone();
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: settings.listen,
            source,
        })?;
    let local = listener.local_addr()?;
    let admin_addr = snap.settings.admin.listen;
    let admin_listener =
        TcpListener::bind(admin_addr)
            .await
            .map_err(|source| RunError::Listen {
                addr: admin_addr,
                source,
            })?;
    let admin_local = admin_listener.local_addr()?;
    let own = Arc::new(vec![local, admin_local]);
    let live = Arc::new(Live::new(snap));
    let pool = Pool::new(PoolSettings {
        idle_timeout: Duration::from_secs(90),
        max_idle_per_origin: 256,
    });
    let cap = connection_cap(settings.max_connections);
    let mut log_settings: LogSettings = live.get().settings.log.clone();
    if log_settings.node.is_empty() {
        log_settings.node = node_name();
    }
    // A file-size limit (RLIMIT_FSIZE) must make writes fail, not kill the process.
    let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25))?;
    let log_dir = log_settings.dir.clone();
    let handle = crate::decision_log::writer::open(log_settings)
        .map_err(|e| RunError::Log(e.to_string()))?;
    tracing::info!(dir = %log_dir.display(), "decision log open");
    let proxy = Arc::new(Proxy {
        live,
        config,
        log: DecisionLog { handle },
        auth: AuthCache::default(),
        pool,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        tracker: TaskTracker::new(),
        own,
        after_load,
    });
    let caps = Arc::new(Caps {
        global: Arc::new(Semaphore::new(cap)),
        per_client: Mutex::new(HashMap::new()),
        per_client_max: settings.max_connections_per_client,
    });
    proxy.metrics.lists_loaded.set(Utc::now().timestamp());
    proxy.set_snapshot_gauges();
    tracing::info!(admin = %admin_local, "admin listener (metrics, health, grants API)");
    tracing::info!(listen = %local, max_connections = cap, "gatehouse proxy listening");

    // The grants file is watched through its directory, so that editors' and the CLI's
    // write-then-rename is seen; the watcher only turns file events into a reload signal.
    let (grants_tx, mut grants_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let grants_file = proxy.live.get().policy.grant_rules.file.clone();
    let _watcher = watch_grants(&grants_file, grants_tx);
    let mut expiry_check = tokio::time::interval(Duration::from_secs(15));
    let mut expired_seen: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();

    let shutdown = CancellationToken::new();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;

    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        proxy.clone(),
        shutdown.clone(),
    ));
    let accept = {
        let proxy = proxy.clone();
        let caps = caps.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { accept_loop(listener, proxy, caps, shutdown).await })
    };
    loop {
        tokio::select! {
            _ = hup.recv() => proxy.reload().await,
            Some(()) = grants_rx.recv() => {
                // Debounce: editors write in several steps.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while grants_rx.try_recv().is_ok() {}
                proxy.reload_grants();
            }
            _ = expiry_check.tick() => proxy.audit_expiries(&mut expired_seen),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(
        grace_secs = settings.shutdown_grace.as_secs(),
        "shutting down: no new connections; finishing requests in flight"
    );
    shutdown.cancel();
    let _ = accept.await;
    let _ = admin_task.await;
    proxy.tracker.close();
    if tokio::time::timeout(settings.shutdown_grace, proxy.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    proxy.log.handle.close().await;
    tracing::info!("gatehouse stopped");
    Ok(())
}

/// Watches the grants file's directory; `None` (with a warning) if it cannot.
fn watch_grants(
    file: &std::path::Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = file.parent()?.to_path_buf();
    let name = file.file_name()?.to_os_string();
    let mut watcher = match notify::recommended_watcher(
        move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if event
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(name.as_os_str()))
                {
                    let _ = tx.send(());
                }
            }
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the grants file; send SIGHUP after editing it");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the grants directory; send SIGHUP after editing it");
        return None;
    }
    Some(watcher)
}

/// Audit records for what changed between two grant sets.
fn grant_changes(
    old: &crate::core::grants::GrantSet,
    new: &crate::core::grants::GrantSet,
    policy: &crate::core::policy::Policy,
) -> Vec<crate::decision_log::Body> {
    use crate::decision_log::Body;
    let mut out = Vec::new();
    for g in &new.grants {
        if !old.grants.iter().any(|o| o.id == g.id) {
            out.push(Body::Grant {
                action: "added".into(),
                id: g.id.to_string(),
                ticket: g.ticket.to_string(),
                by: g.issued_by.clone(),
                detail: {
                    let (scope, target) = g.terms(policy);
                    format!(
                        "{} (for {scope}; opens {target}; from {} until {})",
                        g.reason,
                        g.starts.to_rfc3339(),
                        g.expires.to_rfc3339()
                    )
                },
            });
        }
    }
    for g in &old.grants {
        if new.grants.iter().any(|n| n.id == g.id) {
            continue;
        }
        let revoked_by = new
            .archived
            .iter()
            .find(|(id, _)| **id == *g.id)
            .and_then(|(_, by)| by.clone());
        out.push(Body::Grant {
            action: if revoked_by.is_some() {
                "revoked".into()
            } else {
                "removed".into()
            },
            id: g.id.to_string(),
            ticket: g.ticket.to_string(),
            by: revoked_by.unwrap_or_else(|| "a hand edit of the grants file".into()),
            detail: g.reason.clone(),
        });
    }
    out
}

/// This node's name: the host name.
fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gatehouse".to_string())
}

impl Proxy {
    /// Gauges that describe the snapshot in force: list sizes, load time, grants.
    fn set_snapshot_gauges(&self) {
        let snap = self.live.get();
        for (id, def) in snap.policy.categories() {
            let c = &snap.report.counts[id.index()];
            let entries = c.domains + c.urls + c.hashes + c.expressions + c.terms;
            self.metrics
                .list_entries
                .with_label_values(&[def.category.name.as_str()])
                .set(entries as i64);
        }
        let now = Utc::now();
        self.metrics.grants_active.set(
            snap.grants
                .grants
                .iter()
                .filter(|g| g.active_at(now))
                .count() as i64,
        );
    }

    /// Re-reads the grants file; a file that fails is refused whole and the grants in
    /// force stay.
    fn reload_grants(&self) {
        let current = self.live.get();
        match current.with_grants() {
            Ok(next) => {
                let changes = grant_changes(&current.grants, &next.grants, &next.policy);
                let active = next.grants.grants.len();
                self.live.replace(next);
                tracing::info!(
                    kind = "grants",
                    result = "ok",
                    grants = active,
                    "reloaded grants"
                );
                self.log
                    .handle
                    .append_nowait(crate::decision_log::Body::Reload {
                        what: "grants".into(),
                        ok: true,
                        detail: format!("{active} grants"),
                    });
                for change in changes {
                    self.log.handle.append_nowait(change);
                }
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(kind = "grants", result = "error", "{e}");
                }
                tracing::error!(
                    kind = "grants",
                    result = "error",
                    "grants file refused; the grants in force stay"
                );
                self.log
                    .handle
                    .append_nowait(crate::decision_log::Body::Reload {
                        what: "grants".into(),
                        ok: false,
                        detail: errors.to_string(),
                    });
            }
        }
    }

    /// Records grants that have run out since the last check (expiry itself is checked
    /// at every decision; this is the audit trail's note of it).
    fn audit_expiries(&self, seen: &mut std::collections::HashSet<Arc<str>>) {
        self.set_snapshot_gauges();
        let now = Utc::now();
        for g in &self.live.get().grants.grants {
            if g.expires <= now && seen.insert(g.id.clone()) {
                self.log
                    .handle
                    .append_nowait(crate::decision_log::Body::Grant {
                        action: "expired".into(),
                        id: g.id.to_string(),
                        ticket: g.ticket.to_string(),
                        by: g.issued_by.clone(),
                        detail: format!("expired at {}", g.expires.to_rfc3339()),
                    });
            }
        }
    }

    /// Reloads policy and lists; a failure leaves the snapshot in force untouched.
    async fn reload(&self) {
        let path = self.config.clone();
        let after_load = self.after_load;
        let result = tokio::task::spawn_blocking(move || load_then(&path, after_load)).await;
        match result {
            Ok(Ok(snap)) => {
                let old_listen = self.live.get().settings.server.listen;
                if snap.settings.server.listen != old_listen {
                    tracing::warn!(old = %old_listen, new = %snap.settings.server.listen, "the listen address changes only at restart");
                }
                let entries = snap.lists.domains.len();
                let changes = grant_changes(&self.live.get().grants, &snap.grants, &snap.policy);
                self.live.replace(snap);
                for change in changes {
                    self.log.handle.append_nowait(change);
                }
                tracing::info!(
                    kind = "policy",
                    result = "ok",
                    domains = entries,
                    "reloaded policy and lists"
                );
            }
            Ok(Err(errors)) => {
                for e in &errors.0 {
                    tracing::error!(kind = "policy", result = "error", "{e}");
                }
                tracing::error!(
                    kind = "policy",
                    result = "error",
                    "reload refused; the previous policy stays in force"
                );
            }
            Err(e) => tracing::error!(error = %e, "reload task failed"),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    caps: Arc<Caps>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a transient error: back off
                // rather than spin; connections in flight free descriptors as they end.
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = caps.global.clone().try_acquire_owned() else {
            proxy.metrics.refused_connections.inc();
            refuse_connection(stream, "the proxy is at its connection limit");
            continue;
        };
        let proxy = proxy.clone();
        let caps = caps.clone();
        let shutdown = shutdown.clone();
        proxy.clone().tracker.spawn(async move {
            let _permit = permit;
            let ip = canonical_ip(peer.ip());
            let Some(_slot) = caps.take(ip) else {
                proxy.metrics.refused_connections.inc();
                refuse_connection(stream, "too many connections from this address");
                return;
            };
            let _open = GaugeGuard::open(&proxy.metrics.connections);
            serve_connection(proxy.clone(), stream, peer, shutdown).await;
        });
    }
}

/// Answers `503` without reading the request and closes: excess connections are refused
/// at once, never queued.
fn refuse_connection(stream: TcpStream, why: &str) {
    let body = format!("{why}\n");
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(msg.as_bytes());
}

async fn serve_connection(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let settings = proxy.live.get().settings.server.clone();
    let limits = ConnLimits {
        head_bytes: settings.max_header_bytes,
        headers: settings.max_headers,
        uri_bytes: settings.max_uri_bytes,
        head_timeout: settings.head_timeout,
        idle_timeout: settings.idle_timeout,
        body_idle_timeout: settings.body_idle_timeout,
        write_idle_timeout: settings.write_idle_timeout,
    };
    let (io, signal) = GuardedIo::new(stream, limits);
    let service = {
        let proxy = proxy.clone();
        service_fn(move |req| proxy.clone().handle(req, peer, signal.clone()))
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size((settings.max_header_bytes * 2).max(16 * 1024))
        .max_headers(settings.max_headers);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(client = %peer, error = %e, "connection ended");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
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
