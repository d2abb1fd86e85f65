//! The admin listener (loopback by default): health for load balancers and Kubernetes,
//! and the grants API for helpdesk integrations.
//!
//! | route | who | does |
//! | --- | --- | --- |
//! | `GET /metrics` | anyone on the admin network | Prometheus text format |
//! | `GET /healthz` | anyone | the process is up |
//! | `GET /readyz` | anyone | policy and lists loaded, decision log writable |
//! | `GET /api/grants` | viewer, technician | every grant with its state |
//! | `POST /api/grants` | technician | adds a grant (JSON); `400` with the reasons |
//! | `DELETE /api/grants/{id}?reason=…` | technician | revokes a grant |
//! | `GET /api/decisions/{reference}` | viewer, technician | the decision a block page's reference names, how it ended, and what would unblock it (the body of a `POST /api/grants`, less ticket and reason) |
//!
//! Tokens are bearer tokens whose SHA-256 is listed in policy with a role; the token's
//! name is recorded as who made the change. Every call, allowed or not, is an entry in
//! the decision log.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Proxy;
use crate::decision_log::{Body as Entry, GrantEvent};
use crate::grant_store::{self, NewGrant, StoreError};
use crate::settings::{AdminToken, Role};

type Reply = Response<Full<Bytes>>;

fn json(status: StatusCode, value: serde_json::Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// Finds the token a request carries, comparing hashes without an early exit.
fn token_of<'a>(req: &Request<Incoming>, tokens: &'a [AdminToken]) -> Option<&'a AdminToken> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    tokens.iter().find(|t| {
        t.sha256
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    })
}

/// Serves the admin listener until shutdown.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(handle(proxy, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(proxy: Arc<Proxy>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (Method::GET, "/metrics") => {
            let m = &proxy.metrics;
            let stats = &proxy.log.handle.stats;
            use std::sync::atomic::Ordering::Relaxed;
            crate::metrics::Metrics::sync(&m.log_records, stats.written.load(Relaxed));
            crate::metrics::Metrics::sync(
                &m.log_write_failures,
                stats.write_failures.load(Relaxed),
            );
            crate::metrics::Metrics::sync(&m.log_lost, stats.lost.load(Relaxed));
            m.log_queue_depth.set(proxy.log.handle.queue_depth() as i64);
            m.log_fsync_seconds
                .set(stats.last_fsync_us.load(Relaxed) as f64 / 1e6);
            m.log_failing.set(i64::from(stats.failing.load(Relaxed)));
            let mut r = Response::new(Full::new(Bytes::from(m.encode())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return r;
        }
        (Method::GET, "/readyz") => {
            return if proxy
                .log
                .handle
                .stats
                .failing
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "decision log not writable\n",
                )
            } else {
                text(StatusCode::OK, "ready\n")
            };
        }
        _ => {}
    }
    if !path.starts_with("/api/grants") && !path.starts_with("/api/decisions/") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let snap = proxy.live.get();
    let token = token_of(&req, &snap.settings.admin.tokens).cloned();
    let who = token
        .as_ref()
        .map(|t| t.name.clone())
        .unwrap_or_else(|| "unauthenticated".into());
    let audit = |action: GrantEvent, id: &str, ticket: &str, detail: String| {
        proxy.log.handle.append_nowait(Entry::Grant {
            action,
            id: id.to_string(),
            ticket: ticket.to_string(),
            by: who.clone(),
            detail,
        });
    };
    let Some(token) = token else {
        audit(
            GrantEvent::ApiRefused(method.to_string()),
            "-",
            "-",
            format!("{path}: no valid token"),
        );
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "a valid bearer token is needed"}),
        );
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"gatehouse\""),
        );
        return r;
    };
    let writes = method != Method::GET;
    if writes && token.role != Role::Technician {
        audit(
            GrantEvent::ApiRefused(method.to_string()),
            "-",
            "-",
            format!("{path}: viewer tokens may only read"),
        );
        return json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": "this token may only read grants"}),
        );
    }
    let now = chrono::Utc::now();
    match (method.clone(), path.trim_end_matches('/')) {
        (Method::GET, "/api/grants") => {
            let s = snap.clone();
            match tokio::task::spawn_blocking(move || grant_store::list(&s, now)).await {
                Ok(Ok(rows)) => {
                    audit(
                        GrantEvent::ApiList,
                        "-",
                        "-",
                        format!("{} grants", rows.len()),
                    );
                    json(StatusCode::OK, serde_json::json!(rows))
                }
                _ => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"error": "the grants file could not be read"}),
                ),
            }
        }
        (Method::POST, "/api/grants") => {
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"errors": ["the body is unreadable or larger than 64 KiB"]}),
                    )
                }
            };
            let mut grant: NewGrant = match serde_json::from_slice(&body) {
                Ok(g) => g,
                Err(e) => {
                    audit(
                        GrantEvent::ApiRefused("add".into()),
                        "-",
                        "-",
                        e.to_string(),
                    );
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"errors": [e.to_string()]}),
                    );
                }
            };
            // The token says who: a request cannot issue grants in someone else's name.
            grant.issued_by = token.name.clone();
            let ticket = grant.ticket.clone();
            let s = snap.clone();
            let result =
                tokio::task::spawn_blocking(move || grant_store::add(&s, &grant, now)).await;
            match result {
                Ok(Ok(id)) => {
                    proxy.reload_grants();
                    json(StatusCode::CREATED, serde_json::json!({"id": id}))
                }
                Ok(Err(e)) => refused(&audit, "add", &ticket, e),
                Err(_) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"errors": ["internal error"]}),
                ),
            }
        }
        (Method::DELETE, p) if p.starts_with("/api/grants/") => {
            let id = p.trim_start_matches("/api/grants/").to_string();
            let reason = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("reason=")))
                .map(|r| r.replace('+', " "))
                .unwrap_or_default();
            let by = token.name.clone();
            let s = snap.clone();
            let id2 = id.clone();
            let result = tokio::task::spawn_blocking(move || {
                grant_store::revoke(&s, &id2, &by, &reason, now)
            })
            .await;
            match result {
                Ok(Ok(())) => {
                    proxy.reload_grants();
                    json(StatusCode::OK, serde_json::json!({"revoked": id}))
                }
                Ok(Err(e)) => refused(&audit, "revoke", &id, e),
                Err(_) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"errors": ["internal error"]}),
                ),
            }
        }
        (Method::GET, p) if p.starts_with("/api/decisions/") => {
            let typed = p.trim_start_matches("/api/decisions/");
            let typed = percent_encoding::percent_decode_str(typed)
                .decode_utf8_lossy()
                .into_owned();
            let seq = match crate::decision::parse_reference(&typed) {
                Ok(seq) => seq,
                Err(e) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": format!("reference {typed:?}: {e}")}),
                    )
                }
            };
            let dir = snap.settings.log.dir.clone();
            let found =
                tokio::task::spawn_blocking(move || crate::decision_log::reader::find(&dir, seq))
                    .await;
            let reference = crate::decision::format_reference(seq);
            match found {
                Ok(Ok(Some(found))) => {
                    audit(
                        GrantEvent::ApiShow,
                        &reference,
                        "-",
                        format!("decision #{seq}"),
                    );
                    json(StatusCode::OK, decision_json(&found))
                }
                Ok(Ok(None)) => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": format!("reference {reference} (#{seq}) is not in this node's log")}),
                ),
                _ => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"error": "the decision log could not be read"}),
                ),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// A found entry as the decisions API returns it: the decision as `log export --format
/// jsonl` writes it, with its reference and what would unblock it.
fn decision_json(found: &crate::decision_log::reader::Found) -> serde_json::Value {
    use crate::decision::Unblock;
    let e = &found.entry;
    let reference = crate::decision::format_reference(e.seq);
    let Entry::Decision(d) = &e.body else {
        return serde_json::json!({
            "reference": reference,
            "seq": e.seq,
            "node": found.node,
            "kind": "not a decision",
        });
    };
    let unblock = match crate::decision::unblock(d) {
        Unblock::Grant { site, user, group } => {
            let mut grant = serde_json::json!({ "sites": [site] });
            match user {
                Some(u) => grant["users"] = serde_json::json!([u]),
                None => grant["groups"] = serde_json::json!([group]),
            }
            serde_json::json!({"kind": "grant", "grant": grant})
        }
        Unblock::Illegal => serde_json::json!({"kind": "illegal"}),
        Unblock::ByAddress => serde_json::json!({"kind": "by_address"}),
        Unblock::NotTheSite => serde_json::json!({"kind": "not_the_site"}),
        Unblock::Nothing => serde_json::json!({"kind": "nothing"}),
    };
    let mut out = crate::decision_log::export::decision_json(
        &found.node,
        e.seq,
        e.time_us,
        d,
        found.completion.as_ref().map(|c| &c.body),
    );
    out["reference"] = reference.into();
    out["kind"] = "decision".into();
    out["unblock"] = unblock;
    out
}

fn refused(
    audit: &dyn Fn(GrantEvent, &str, &str, String),
    what: &str,
    key: &str,
    e: StoreError,
) -> Reply {
    let (status, errors): (StatusCode, Vec<String>) = match e {
        StoreError::Invalid(errors) => (
            StatusCode::BAD_REQUEST,
            errors.0.iter().map(|e| e.kind.to_string()).collect(),
        ),
        e @ (StoreError::RevocationUnexplained | StoreError::NoSuchGrant(_)) => {
            (StatusCode::BAD_REQUEST, vec![e.to_string()])
        }
        e @ StoreError::Shape(_) => (StatusCode::INTERNAL_SERVER_ERROR, vec![e.to_string()]),
        StoreError::Io(m) => (StatusCode::INTERNAL_SERVER_ERROR, vec![m.to_string()]),
    };
    audit(
        GrantEvent::ApiRefused(what.into()),
        key,
        key,
        errors.join("; "),
    );
    json(status, serde_json::json!({ "errors": errors }))
}
