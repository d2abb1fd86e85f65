//! One request's decision path: who is asking (proxy authentication, else the source
//! subnet), what they ask for (the absolute-form target), the verdict on it, and its
//! record in the decision log — then the forward, or the refusal.
//!
//! `CONNECT` takes the same first steps and goes on in `tunnel.rs`. The record is handed
//! to the decision log before anything is forwarded; a group that fails closed is
//! refused when it cannot be written.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;
use http::header::{self, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::conn::ConnSignal;
use super::forward::{Completion, Tracked, Upstream};
use super::pool::UpstreamTls;
use super::sign_in::SignedIn;
use super::{tunnel, Body, Proxy, RequestContext};
use crate::core::host::{parse_authority, Scheme, Target};
use crate::core::identity::{canonical_ip, AuthRequirement};
use crate::core::safe_search::SafeSearchRewrite;
use crate::core::verdict::{Action, ReasonCode, Verdict};
use crate::decision::{Allowed, LogError, NoPermit};
use crate::decision_log::{Decision, StoredAction};

/// What a request that Gatehouse sees whole asks for.
pub(super) struct Whole<'a> {
    /// The target, with its path and query.
    pub(super) target: &'a Target,
    /// Its authority, as the `Host` header sent upstream names it.
    pub(super) authority: &'a str,
    /// The URL as recorded (`http://…` or, inspected, `https://…`).
    pub(super) url: &'a str,
    /// A note for the record (a `Host` header rewritten).
    pub(super) host_note: Option<&'a str>,
    /// TLS towards the upstream, for an inspected tunnel's request.
    pub(super) tls: Option<&'a UpstreamTls>,
}

/// A response on its way to the client: the connection closed after it when the guard
/// asks, and its body counted for the request's completion record.
pub(super) fn finish(
    mut resp: Response<Body>,
    is_connect: bool,
    signal: Arc<ConnSignal>,
    completion: Option<Completion>,
) -> Response<Body> {
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
    Response::from_parts(parts, body)
}

impl Proxy {
    /// Counts a decision in the metrics and hands its record to the decision log.
    pub(super) async fn log_decision(
        &self,
        ctx: &RequestContext,
        decision: Decision,
        explanation: &str,
    ) -> Result<u64, LogError> {
        self.count_decision(&decision);
        let alert = self.alert_of(ctx, &decision);
        let result = self.log.record(decision, explanation).await;
        self.time_decision(ctx);
        if let Some(mut attempt) = alert {
            attempt.reference = *result.as_ref().unwrap_or(&0);
            self.alerts.offer(attempt);
        }
        result
    }

    /// Counts an allow decision and records it: the permit to forward or tunnel, or why
    /// there is none (see [`DecisionLog::allow`](crate::decision::DecisionLog::allow)).
    pub(super) async fn log_allow(
        &self,
        ctx: &RequestContext,
        verdict: &Verdict,
        decision: Decision,
        explanation: &str,
    ) -> Result<Allowed, NoPermit> {
        self.count_decision(&decision);
        let alert = self.alert_of(ctx, &decision);
        let result = self.log.allow(verdict, decision, explanation).await;
        self.time_decision(ctx);
        if let Some(mut attempt) = alert {
            attempt.reference = match &result {
                Ok(permit) => permit.reference().unwrap_or(0),
                Err(_) => 0,
            };
            self.alerts.offer(attempt);
        }
        result
    }

    /// The alert a decision raises, if its category asks for one (see
    /// [`Policy::alert_for`](crate::core::policy::Policy::alert_for)); its reference is
    /// filled in once the record is written. Nothing is allocated for a decision that
    /// does not alert.
    fn alert_of(
        &self,
        ctx: &RequestContext,
        decision: &Decision,
    ) -> Option<crate::alerts::Attempt> {
        if decision.categories.is_empty() {
            return None;
        }
        let blocked = decision.action == StoredAction::Block;
        let alert = ctx.snapshot.policy.alert_for(
            &decision.categories,
            blocked,
            !decision.terms.is_empty(),
        )?;
        Some(crate::alerts::Attempt {
            at: ctx.now,
            reference: 0,
            client: decision.client,
            device: decision.device.clone(),
            user: decision.user.clone(),
            group: decision.group.clone(),
            url: decision.url.clone(),
            category: alert.category,
            severity: alert.severity,
            mode: alert.mode,
            terms: decision.terms.clone(),
            action: decision.action.as_str(),
        })
    }

    fn count_decision(&self, decision: &Decision) {
        let category = decision
            .categories
            .first()
            .map(String::as_str)
            .unwrap_or("none");
        self.metrics
            .requests
            .with_label_values(&[decision.group.as_str(), decision.action.as_str(), category])
            .inc();
    }

    /// Counts a request or tunnel dialled to a safe-search address, by engine.
    pub(super) fn count_safe_search(&self, safe_search: Option<&SafeSearchRewrite>) {
        if let Some(rewrite) = safe_search {
            self.metrics
                .safe_search_rewrites
                .with_label_values(&[rewrite.engine.as_str()])
                .inc();
        }
    }

    fn time_decision(&self, ctx: &RequestContext) {
        self.metrics
            .decision_seconds
            .observe(ctx.started.elapsed().as_secs_f64());
    }

    /// Handles one request from a client connection.
    pub(super) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        signal: Arc<ConnSignal>,
    ) -> Result<Response<Body>, Infallible> {
        let started = std::time::Instant::now();
        let snapshot = self.live.get();
        // The PAC file, asked for as a web server is (origin-form), before any sign-in:
        // a browser fetches it before it knows it has a proxy.
        if let Some(pac) = &snapshot.settings.pac {
            if req.uri().scheme().is_none() && super::pac::is_pac_path(req.uri().path()) {
                return Ok(super::pac::respond(req.method(), &pac.script)
                    .map(|b| b.map_err(|never| match never {}).boxed()));
            }
        }
        let client = canonical_ip(peer.ip());
        let identity = &snapshot.policy.identity;
        let auth_header = req
            .headers()
            .get(header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let subnet = identity.subnet_for(client);
        // The device's name is looked up while the credentials are checked: a lookup
        // not answered within its short wait leaves this request's record without it.
        let (signed_in, device) = tokio::join!(
            self.sign_in(auth_header, &snapshot, &signal, started),
            self.devices
                .name(identity, snapshot.settings.reverse_dns.as_ref(), client)
        );
        let (group, user) = match signed_in {
            SignedIn::User { name, group } => (
                group.unwrap_or_else(|| subnet.map(|r| r.group).unwrap_or(identity.default_group)),
                Some(name),
            ),
            SignedIn::Unknown => return Ok(self.challenge(&snapshot)),
            SignedIn::Continue(token) => return Ok(self.negotiate_continue(&snapshot, &token)),
            SignedIn::DirectoryDown => return Ok(self.directory_unavailable(&snapshot)),
            SignedIn::Failed(explanation) => {
                self.metrics.auth_failures.inc();
                tracing::info!(target: "gatehouse::auth", client = %client, "proxy authentication failed");
                // Wrong credentials are recorded (a burst of them is a bypass attempt the
                // DSL sees); a browser's first, credential-less request is not.
                let group = subnet.map(|r| r.group).unwrap_or(identity.default_group);
                let ctx = RequestContext {
                    snapshot: snapshot.clone(),
                    client,
                    user: None,
                    device: device.clone(),
                    group,
                    now: Utc::now(),
                    started,
                    original_destination: None,
                };
                let url = req.uri().to_string();
                let decision = Decision::new(
                    &ctx.asked(req.method().as_str(), &url),
                    StoredAction::Block,
                    ReasonCode::AuthFailed,
                    Vec::new(),
                    None,
                    407,
                    Vec::new(),
                );
                let _ = self.log_decision(&ctx, decision, &explanation).await;
                return Ok(self.challenge(&snapshot));
            }
            SignedIn::Missing => match subnet {
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
            device,
            group,
            now: Utc::now(),
            started,
            original_destination: None,
        };
        let is_connect = req.method() == Method::CONNECT;
        let mut completion = None;
        let resp = if is_connect {
            tunnel::handle(self.clone(), req, ctx).await
        } else {
            self.http(req, ctx, &mut completion).await
        };
        Ok(finish(resp, is_connect, signal, completion))
    }

    async fn http(
        self: &Arc<Self>,
        req: Request<Incoming>,
        ctx: RequestContext,
        completion: &mut Option<Completion>,
    ) -> Response<Body> {
        let uri = req.uri().clone();
        if uri.scheme().is_none() || uri.authority().is_none() {
            return self
                .refuse_unreadable(
                    &ctx,
                    req.method().as_str(),
                    &uri.to_string(),
                    "This is a web proxy: requests must name the whole address (absolute-form), as browsers do when set to use a proxy.",
                )
                .await;
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
            Err(e) => {
                return self
                    .refuse_unreadable(&ctx, req.method().as_str(), &full_uri, &e.to_string())
                    .await
            }
        };
        if target.scheme != Scheme::Http {
            return self
                .refuse_unreadable(
                    &ctx,
                    req.method().as_str(),
                    &full_uri,
                    "Only http:// addresses are forwarded this way; browsers use CONNECT for https.",
                )
                .await;
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
        let authority = target.authority();
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut url = String::with_capacity(7 + authority.len() + path.len());
        url.push_str("http://");
        url.push_str(&authority);
        url.push_str(path);
        self.decide_and_forward(
            req,
            ctx,
            Whole {
                target: &target,
                authority: &authority,
                url: &url,
                host_note: host_note.as_deref(),
                tls: None,
            },
            completion,
        )
        .await
    }

    /// A request Gatehouse sees whole (plain HTTP, or HTTPS inside an inspected tunnel):
    /// decided on its full URL, recorded, then refused with the block page or forwarded
    /// with the group's controls applied.
    pub(super) async fn decide_and_forward(
        self: &Arc<Self>,
        req: Request<Incoming>,
        ctx: RequestContext,
        whole: Whole<'_>,
        completion: &mut Option<Completion>,
    ) -> Response<Body> {
        let Whole {
            target,
            authority,
            url,
            host_note,
            tls,
        } = whole;
        let snap = ctx.snapshot.clone();
        let policy = &snap.policy;
        let (classification, verdict) = ctx.decide(target);
        // Every record of this request names its own method: the request itself goes
        // upstream, so the method is kept (a copy of a tag for the standard methods).
        let method = req.method().clone();
        let asked = ctx.asked(method.as_str(), url);
        if verdict.action == Action::Block {
            return self
                .refuse_verdict(&ctx, &asked, host_note, &verdict, &classification, false)
                .await;
        }
        let mut explanation = policy.explain(&verdict);
        if let Some(note) = host_note {
            explanation.push_str("; ");
            explanation.push_str(note);
        }
        let enforcement = policy.controls(ctx.group, target);
        // A search engine or YouTube, for a group with its setting on, is dialled to the
        // engine's safe-search address; the request keeps its Host header.
        let safe_search = policy.safe_search(ctx.group, &target.host);
        let record = Decision::new(
            &asked,
            StoredAction::Allow,
            verdict.reason.code(),
            policy
                .category_names(verdict.categories)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            verdict.grant.as_ref().map(|g| g.ticket.to_string()),
            0,
            classification
                .terms
                .iter()
                .map(|t| t.term.clone())
                .collect(),
        )
        .with_safe_search(safe_search.clone())
        .with_enforced(enforcement.enforced.clone());
        let permit = match self.log_allow(&ctx, &verdict, record, &explanation).await {
            Ok(permit) => permit,
            // Groups configured `on_log_failure = "allow"` keep working; the record is
            // counted as lost, and the permit has no reference.
            Err(NoPermit::Unlogged(unlogged)) if !policy.group(ctx.group).fail_closed => {
                unlogged.allow_unrecorded()
            }
            Err(e) => {
                tracing::warn!(target: "gatehouse::decision", group = %policy.group(ctx.group).name, error = %e, "refused: the decision log cannot be written");
                return self.log_unavailable(&ctx);
            }
        };

        self.count_safe_search(safe_search.as_ref());
        let upstream = Upstream {
            authority,
            target,
            safe_search: safe_search.as_ref(),
            tls,
            enforcement: &enforcement,
        };
        self.forward(req, &ctx, permit, &upstream, &asked, completion)
            .await
    }
}
