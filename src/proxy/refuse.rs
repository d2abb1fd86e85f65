//! Every answer that is not the upstream's: the block page (HTML, or text for
//! `CONNECT`), refusals of how a request arrived, upstream failures, the sign-in
//! challenge, bad requests, and "filtering unavailable" when the decision log cannot be
//! written for a group that fails closed.
//!
//! A refusal is recorded before it is sent, and stands even when it cannot be recorded:
//! only its reference is missing then.

use chrono::{DateTime, Utc};
use http::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::upstream::UpstreamError;
use super::{full, pages, Body, Proxy, RequestContext};
use crate::core::category::{Category, Severity};
use crate::core::verdict::{Reason, ReasonCode, Verdict};
use crate::decision::{format_reference, Asked};
use crate::decision_log::{Decision, StoredAction};
use crate::snapshot::Snapshot;

impl Proxy {
    pub(super) fn local_time(&self, snap: &Snapshot, at: DateTime<Utc>) -> String {
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

    pub(super) fn page(status: StatusCode, html: String) -> Response<Body> {
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

    pub(super) fn text(status: StatusCode, text: String) -> Response<Body> {
        let mut resp = Response::new(full(text));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }

    /// Answers `400` with the error page, and records it: a request that reached the
    /// proxy but could not be read as one is still internet use, and a run of them is
    /// worth seeing.
    pub(super) async fn refuse_unreadable(
        &self,
        ctx: &RequestContext,
        method: &str,
        url: &str,
        why: &str,
    ) -> Response<Body> {
        let asked = ctx.asked(method, url);
        let _ = self
            .record_refusal(ctx, &asked, Vec::new(), ReasonCode::BadRequest, why, 400)
            .await;
        let mut resp = Proxy::page(
            StatusCode::BAD_REQUEST,
            pages::error_page(&ctx.snapshot.policy.school, "Bad request", "-", why),
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }

    /// Records a refusal that is not a policy verdict (a port, a protocol, a missing SNI).
    pub(super) async fn record_refusal(
        &self,
        ctx: &RequestContext,
        asked: &Asked<'_>,
        categories: Vec<String>,
        reason: ReasonCode,
        explanation: &str,
        status: u16,
    ) -> Option<u64> {
        self.record_block(ctx, asked, categories, reason, None, explanation, status)
            .await
    }

    /// Records a block; `grant` is the ticket of the grant that decided it (a teacher's
    /// lesson block: `lesson:<id>`), so the log and the report can count it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_block(
        &self,
        ctx: &RequestContext,
        asked: &Asked<'_>,
        categories: Vec<String>,
        reason: ReasonCode,
        grant: Option<String>,
        explanation: &str,
        status: u16,
    ) -> Option<u64> {
        let record = Decision::new(
            asked,
            StoredAction::Block,
            reason,
            categories,
            grant,
            status,
            Vec::new(),
        );
        self.log_decision(ctx, record, explanation).await.ok()
    }

    /// Refuses with the block page (HTML) or its text (CONNECT), recording it first.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn refuse(
        &self,
        ctx: &RequestContext,
        asked: &Asked<'_>,
        shown: Option<&Category>,
        categories: Vec<String>,
        reason: ReasonCode,
        grant: Option<String>,
        explanation: String,
        as_text: bool,
    ) -> Response<Body> {
        // A refusal stands even when it cannot be logged; only its reference is missing.
        let reference = match self
            .record_block(ctx, asked, categories, reason, grant, &explanation, 403)
            .await
        {
            Some(seq) => format_reference(seq),
            None => "unavailable (the log could not be written)".to_string(),
        };
        let snap = &ctx.snapshot;
        let time = self.local_time(snap, ctx.now);
        let info = pages::BlockInfo {
            school: &snap.policy.school,
            site: asked.url,
            category: shown.map(|c| c.name.as_str()),
            notice: shown.and_then(|c| c.block_message.as_deref()),
            can_unblock: shown.is_none_or(|c| c.severity != Severity::Illegal),
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
    pub(super) async fn refuse_verdict(
        &self,
        ctx: &RequestContext,
        asked: &Asked<'_>,
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
            Reason::Illegal { category } | Reason::Category { category, .. } => {
                Some(policy.category(category))
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
                asked,
                shown,
                names,
                verdict.reason.code(),
                verdict.grant.as_ref().map(|g| g.ticket.to_string()),
                explanation,
                as_text,
            )
            .await;
        if !classification.terms.is_empty() {
            tracing::info!(target: "gatehouse::decision", url = asked.url, terms = ?classification.terms.iter().map(|t| &t.term).collect::<Vec<_>>(), "search terms of concern");
        }
        if as_text {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    pub(super) fn log_unavailable(&self, ctx: &RequestContext) -> Response<Body> {
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

    pub(super) async fn upstream_failure(
        &self,
        ctx: &RequestContext,
        asked: &Asked<'_>,
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
            UpstreamError::Certificate { .. } => (
                StatusCode::BAD_GATEWAY,
                "This site's security certificate is not valid",
            ),
        };
        tracing::info!(target: "gatehouse::upstream", kind = e.kind(), method = asked.method, url = asked.url, error = %e, "upstream failure");
        self.metrics
            .upstream_errors
            .with_label_values(&[e.kind()])
            .inc();
        match e {
            // A pivot attempt is a decision worth keeping.
            UpstreamError::Internal { .. } => {
                let _ = self
                    .record_refusal(
                        ctx,
                        asked,
                        Vec::new(),
                        ReasonCode::InternalDestination,
                        &e.to_string(),
                        403,
                    )
                    .await;
            }
            // An inspected request refused because its site's certificate did not
            // verify: the pupil sees why, and the log says so.
            UpstreamError::Certificate { .. } => {
                let _ = self
                    .record_refusal(
                        ctx,
                        asked,
                        Vec::new(),
                        ReasonCode::UpstreamCertificate,
                        &e.to_string(),
                        502,
                    )
                    .await;
            }
            _ => {}
        }
        if as_text {
            let mut r = Proxy::text(status, format!("{title}: {e}\n"));
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        Proxy::page(
            status,
            pages::error_page(
                &ctx.snapshot.policy.school,
                title,
                asked.url,
                &e.to_string(),
            ),
        )
    }

    pub(super) fn challenge(&self, snap: &Snapshot) -> Response<Body> {
        self.metrics.auth_challenges.inc();
        let mut resp = Proxy::page(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            pages::auth_page(&snap.policy.school),
        );
        let realm = format!(
            "Basic realm=\"Gatehouse ({})\"",
            snap.policy.school.replace('"', "'")
        );
        // Negotiate first: a browser takes the first scheme it can do, and a
        // domain-joined device signs in with Kerberos without a prompt; one without a
        // ticket falls back to Basic.
        if snap.settings.kerberos.is_some() {
            resp.headers_mut().append(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Negotiate"),
            );
        }
        if let Ok(v) = HeaderValue::from_str(&realm) {
            resp.headers_mut().append(header::PROXY_AUTHENTICATE, v);
        }
        resp
    }

    /// A `407` carrying the next leg of a Kerberos exchange.
    pub(super) fn negotiate_continue(&self, snap: &Snapshot, token: &str) -> Response<Body> {
        let mut resp = Proxy::page(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            pages::auth_page(&snap.policy.school),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("Negotiate {token}")) {
            resp.headers_mut().insert(header::PROXY_AUTHENTICATE, v);
        }
        resp
    }
}
