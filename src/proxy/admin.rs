//! The admin listener (loopback by default; over TLS with `[admin] tls_cert` and
//! `tls_key`): health for load balancers and Kubernetes, the grants API for helpdesk
//! integrations, and the web console.
//!
//! | route | who | does |
//! | --- | --- | --- |
//! | `GET /metrics` | anyone on the admin network | Prometheus text format |
//! | `GET /healthz` | anyone | the process is up |
//! | `GET /readyz` | anyone | policy and lists loaded, decision log writable; with grants in etcd, a second line says how the store stands (`grants store degraded since …` while it is lost; still `200`: filtering works) |
//! | `GET /api/grants` | viewer, technician | every grant with its state |
//! | `POST /api/grants` | technician | adds a grant (JSON); `400` with the reasons |
//! | `DELETE /api/grants/{id}?reason=…` | technician | revokes a grant |
//! | `GET /api/decisions/{reference}` | viewer, technician, dsl | the decision a block page's reference names, how it ended, its alerts and their acknowledgements, and what would unblock it (the body of a `POST /api/grants`, less ticket and reason) |
//! | `GET /api/lessons` | teacher (their own), viewer, technician | lesson overrides with their state |
//! | `POST /api/lessons` | teacher | a lesson override for the token's classrooms or classes (JSON: `effect`, `reason`, `classrooms`, `groups`, `sites`, `categories`, `minutes`); `201` with its id and end, `400` with the reason, `403` for a room or class not the teacher's |
//! | `DELETE /api/lessons/{id}` | teacher (their own), technician | ends a lesson override early |
//! | `POST /api/alerts/{reference}/ack` | dsl | acknowledges the alerts about a decision (JSON: `by`, `note`); `201`, `404` if no alert was sent about it |
//! | `GET /api/lists/sources` | viewer, technician | each `[[lists.sources]]` feed: URL, format, guard, last attempt and success, entries |
//! | `POST /api/lists/update` | technician | updates the feeds (JSON, all optional: `source`, `allow_shrink`, `reason`) and swaps good lists in; `200` with each source's outcome, `409` while another update runs |
//! | `/console/…` | console accounts | the web console (`super::console`): sign-in, sessions and its pages |
//!
//! Tokens are bearer tokens whose SHA-256 is listed in policy with a role; the token's
//! name is recorded as who made the change. With `[[teachers.directory]]` rules, a
//! teacher may instead sign in with their directory account (`Authorization: Basic`):
//! they get the teacher role for the rules' classrooms and groups, under their account
//! name. Every call, allowed or not, is an entry in
//! the decision log. A teacher's token reaches the lessons API only: grants and
//! decisions name pupils and tickets that are not a teacher's business.

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
use crate::grant_store::{self, NewGrant, NewLesson, StoreError};
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

/// A teacher signing in with their directory account (`Authorization: Basic`), when
/// the policy maps directory groups to teachers (`[[teachers.directory]]`): a teacher
/// "token" named after the account, for the classrooms and groups of every rule whose
/// group the account is in. `None` for anything else (no directory, a wrong password,
/// the directory down, an account in no teachers' group): the caller answers 401.
async fn directory_teacher(
    proxy: &Proxy,
    req: &Request<Incoming>,
    snap: &crate::snapshot::Snapshot,
) -> Option<AdminToken> {
    let settings = snap.settings.directory.as_ref()?;
    if snap.policy.teachers.directory.is_empty() {
        return None;
    }
    let header = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (user, password) = super::auth::parse_basic(header)?;
    match proxy.directory.sign_in(settings, &user, &password).await {
        crate::directory::SignIn::Ok(account) => {
            let scope = snap
                .policy
                .teachers
                .scope_of_directory_groups(&account.groups)?;
            Some(AdminToken {
                name: account.name.clone(),
                role: Role::Teacher,
                sha256: [0; 32],
                teacher: scope,
            })
        }
        crate::directory::SignIn::Refused(e) | crate::directory::SignIn::Unavailable(e) => {
            tracing::info!(target: "gatehouse::auth", error = %e, "admin API directory sign-in refused");
            None
        }
    }
}

/// Why the admin listener's certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminTlsError {
    /// The certificate chain could not be read.
    #[error("[admin] tls_cert {}: {error}", path.display())]
    Cert {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: String,
    },
    /// The private key could not be read.
    #[error("[admin] tls_key {}: {error}", path.display())]
    Key {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: String,
    },
    /// rustls refused the pair (a key that is not the certificate's, an unsupported type).
    #[error("[admin] tls_cert and tls_key: {0}")]
    Pair(String),
}

/// The rustls configuration for serving the admin listener over TLS (`[admin] tls_cert`,
/// `tls_key`: PEM files), on the ring provider the proxy uses.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, AdminTlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| AdminTlsError::Cert {
            path: cert.to_path_buf(),
            error: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(AdminTlsError::Cert {
            path: cert.to_path_buf(),
            error: "no certificate in the file".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| AdminTlsError::Key {
        path: key.to_path_buf(),
        error: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| AdminTlsError::Pair(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(|e| AdminTlsError::Pair(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the admin listener until shutdown; over TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = tokio::select! {
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
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let secure = acceptor.is_some();
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(handle(proxy, req, peer.ip(), secure).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            match acceptor {
                Some(acceptor) => {
                    // A handshake that stalls is dropped, as a head that stalls is.
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await;
                    if let Ok(Ok(tls)) = handshake {
                        let _ = http
                            .max_buf_size(64 * 1024)
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    }
                }
                None => {
                    let _ = http
                        .max_buf_size(64 * 1024)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
    tls: bool,
) -> Reply {
    let path = req.uri().path().to_string();
    if path == "/console" || path.starts_with("/console/") {
        return super::console::handle(&proxy, req, peer, tls).await;
    }
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
                match proxy.grants_store_detail() {
                    // Filtering works without the store: ready, but say what is missing.
                    Some(detail) => {
                        let mut r =
                            Response::new(Full::new(Bytes::from(format!("ready\n{detail}\n"))));
                        *r.status_mut() = StatusCode::OK;
                        r
                    }
                    None => text(StatusCode::OK, "ready\n"),
                }
            };
        }
        _ => {}
    }
    let area = if path == "/api/grants" || path.starts_with("/api/grants/") {
        Area::Grants
    } else if path.starts_with("/api/decisions/") {
        Area::Decisions
    } else if path == "/api/lessons" || path.starts_with("/api/lessons/") {
        Area::Lessons
    } else if path.starts_with("/api/alerts/") {
        Area::Alerts
    } else if path.starts_with("/api/lists/") {
        Area::Lists
    } else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let snap = proxy.live.get();
    let token = match token_of(&req, &snap.settings.admin.tokens).cloned() {
        Some(t) => Some(t),
        None => directory_teacher(&proxy, &req, &snap).await,
    };
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
    if let Err(why) = area.permits(token.role, &method) {
        audit(
            GrantEvent::ApiRefused(method.to_string()),
            "-",
            "-",
            format!("{path}: {} tokens {why}", token.role.as_str()),
        );
        return json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": format!("this {} token {why}", token.role.as_str())}),
        );
    }
    let now = chrono::Utc::now();
    match area {
        Area::Lessons => return lessons(&proxy, req, &token, &audit, now).await,
        Area::Alerts => return ack(&proxy, req, &token, &audit).await,
        Area::Lists => return lists(&proxy, req, &token).await,
        Area::Grants | Area::Decisions => {}
    }
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
                Ok(Err(StoreError::Etcd(e))) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"error": e.to_string()}),
                ),
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
                    proxy.reload_grants_after_write().await;
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
                    proxy.reload_grants_after_write().await;
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

/// The parts of the API, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    Grants,
    Decisions,
    Lessons,
    Alerts,
    Lists,
}

impl Area {
    /// Whether a role may make this call; if not, why (after "this ROLE token").
    fn permits(self, role: Role, method: &Method) -> Result<(), &'static str> {
        let reads = *method == Method::GET;
        match (self, role) {
            (Area::Grants, Role::Technician) => Ok(()),
            (Area::Grants, Role::Viewer) if reads => Ok(()),
            (Area::Grants, Role::Viewer) => Err("may only read grants"),
            (Area::Grants, _) => Err("may not use the grants API"),
            (Area::Decisions, Role::Technician | Role::Viewer | Role::Dsl) => Ok(()),
            (Area::Decisions, _) => Err("may not look up decisions"),
            (Area::Lessons, Role::Teacher) => Ok(()),
            (Area::Lessons, Role::Technician) if *method != Method::POST => Ok(()),
            (Area::Lessons, Role::Viewer) if reads => Ok(()),
            (Area::Lessons, _) => Err("may not make lesson overrides (teacher tokens do)"),
            (Area::Alerts, Role::Dsl) if *method == Method::POST => Ok(()),
            (Area::Alerts, _) => Err("may not acknowledge alerts (dsl tokens do)"),
            (Area::Lists, Role::Technician) => Ok(()),
            (Area::Lists, Role::Viewer) if reads => Ok(()),
            (Area::Lists, Role::Viewer) => Err("may only read the list sources"),
            (Area::Lists, _) => Err("may not use the lists API"),
        }
    }
}

/// Reads a JSON body of at most 64 KiB.
async fn json_body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, String> {
    let body = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| "the body is unreadable or larger than 64 KiB".to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

type Audit<'a> = dyn Fn(GrantEvent, &str, &str, String) + Send + Sync + 'a;

/// `/api/lessons`: a teacher's lesson overrides.
async fn lessons(
    proxy: &Arc<Proxy>,
    req: Request<Incoming>,
    token: &AdminToken,
    audit: &Audit<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Reply {
    let snap = proxy.live.get();
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let teacher = (token.role == Role::Teacher).then(|| token.name.clone());
    match (method, path.as_str()) {
        (Method::GET, "/api/lessons") => {
            let s = snap.clone();
            match tokio::task::spawn_blocking(move || grant_store::list(&s, now)).await {
                Ok(Ok(rows)) => {
                    let rows: Vec<_> = rows
                        .into_iter()
                        .filter(|r| r.kind == "lesson")
                        .filter(|r| teacher.as_ref().is_none_or(|t| r.issued_by == *t))
                        .collect();
                    audit(
                        GrantEvent::ApiList,
                        "-",
                        "-",
                        format!("{} lesson overrides", rows.len()),
                    );
                    json(StatusCode::OK, serde_json::json!(rows))
                }
                _ => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"error": "the grants file could not be read"}),
                ),
            }
        }
        (Method::POST, "/api/lessons") => {
            let lesson: NewLesson = match json_body(req).await {
                Ok(l) => l,
                Err(e) => {
                    audit(GrantEvent::ApiRefused("lesson".into()), "-", "-", e.clone());
                    return json(StatusCode::BAD_REQUEST, serde_json::json!({"errors": [e]}));
                }
            };
            let s = snap.clone();
            let name = token.name.clone();
            let scope = token.teacher.clone();
            let result = tokio::task::spawn_blocking(move || {
                grant_store::add_lesson(&s, &lesson, &name, &scope, now)
            })
            .await;
            match result {
                Ok(Ok(made)) => {
                    proxy.reload_grants_after_write().await;
                    json(StatusCode::CREATED, serde_json::json!(made))
                }
                Ok(Err(e)) => refused(audit, "lesson", "-", e),
                Err(_) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"errors": ["internal error"]}),
                ),
            }
        }
        (Method::DELETE, p) if p.starts_with("/api/lessons/") => {
            let id = p.trim_start_matches("/api/lessons/").to_string();
            let s = snap.clone();
            let by = token.name.clone();
            let id2 = id.clone();
            let result = tokio::task::spawn_blocking(move || {
                grant_store::end_lesson(&s, &id2, &by, teacher.as_deref(), now)
            })
            .await;
            match result {
                Ok(Ok(())) => {
                    proxy.reload_grants_after_write().await;
                    json(StatusCode::OK, serde_json::json!({"ended": id}))
                }
                Ok(Err(e)) => refused(audit, "end lesson", &id, e),
                Err(_) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"errors": ["internal error"]}),
                ),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// What `POST /api/alerts/{reference}/ack` takes.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// Who is acknowledging, when the token is shared (a DSL office's): recorded
    /// with the token's name. Default: the token's name alone.
    #[serde(default)]
    by: Option<String>,
    /// What is being done about it.
    #[serde(default)]
    note: String,
}

/// `POST /api/alerts/{reference}/ack`: the DSL acknowledges the alerts about a decision.
/// The acknowledgement is a decision-log entry, written (handed to the operating system)
/// before the answer says so.
async fn ack(
    proxy: &Arc<Proxy>,
    req: Request<Incoming>,
    token: &AdminToken,
    audit: &Audit<'_>,
) -> Reply {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let Some(typed) = path
        .strip_prefix("/api/alerts/")
        .and_then(|p| p.strip_suffix("/ack"))
    else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let typed = percent_encoding::percent_decode_str(typed)
        .decode_utf8_lossy()
        .into_owned();
    let seq = match crate::decision::parse_reference(&typed) {
        Ok(seq) => seq,
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"errors": [format!("reference {typed:?}: {e}")]}),
            )
        }
    };
    let reference = crate::decision::format_reference(seq);
    let body: AckBody = match json_body(req).await {
        Ok(b) => b,
        Err(e) => {
            audit(
                GrantEvent::ApiRefused("ack".into()),
                &reference,
                "-",
                e.clone(),
            );
            return json(StatusCode::BAD_REQUEST, serde_json::json!({"errors": [e]}));
        }
    };
    let by = match body.by.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
        Some(name) if name != token.name => format!("{name} (token {})", token.name),
        _ => token.name.clone(),
    };
    if body.note.len() > 2000 || by.len() > 200 {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"errors": ["the name or the note is too long (200 and 2000 bytes at most)"]}),
        );
    }
    match acknowledge(proxy, seq, &by, &body.note).await {
        Ok(done) => json(
            StatusCode::CREATED,
            serde_json::json!({
                "reference": reference,
                "acknowledged_by": by,
                "entry": done.entry,
                "earlier_acknowledgements": done.earlier,
            }),
        ),
        Err(e) => {
            let status = match e {
                AckError::NotInLog(_) | AckError::NoAlert(_) => {
                    audit(
                        GrantEvent::ApiRefused("ack".into()),
                        &reference,
                        "-",
                        e.to_string(),
                    );
                    StatusCode::NOT_FOUND
                }
                AckError::Unreadable => StatusCode::INTERNAL_SERVER_ERROR,
                AckError::Write(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            json(status, serde_json::json!({"errors": [e.to_string()]}))
        }
    }
}

/// An acknowledgement written: its entry's sequence number, and how many there were
/// before it.
pub(super) struct Acknowledged {
    pub(super) entry: u64,
    pub(super) earlier: usize,
}

/// Why an acknowledgement was not written.
#[derive(Debug, thiserror::Error)]
pub(super) enum AckError {
    /// The log does not hold the decision.
    #[error("reference {r} (#{0}) is not in this node's log", r = crate::decision::format_reference(*.0))]
    NotInLog(u64),
    /// No alert was sent about it.
    #[error("no alert was sent about reference {r}: there is nothing to acknowledge", r = crate::decision::format_reference(*.0))]
    NoAlert(u64),
    /// The log could not be read.
    #[error("the decision log could not be read")]
    Unreadable,
    /// The acknowledgement could not be written.
    #[error("the acknowledgement could not be written to the decision log: {0}")]
    Write(String),
}

/// Acknowledges the alerts about decision `seq` as `by`, with `note`: the one way the
/// admin API and the web console write a [`Entry::AlertAck`]. The entry is written
/// (handed to the operating system) before this returns.
pub(super) async fn acknowledge(
    proxy: &Proxy,
    seq: u64,
    by: &str,
    note: &str,
) -> Result<Acknowledged, AckError> {
    let dir = proxy.live.get().settings.log.dir.clone();
    let found = tokio::task::spawn_blocking(move || {
        use crate::decision_log::reader;
        // A block's alerts are all within `find`'s reach; an allowed visit's
        // (alert_on_allow) may come after its completion, where `find` stops.
        match reader::find(&dir, seq) {
            Ok(Some(f)) if f.alerts.is_empty() => reader::find_with_alerts(&dir, seq),
            other => other,
        }
    })
    .await;
    let found = match found {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return Err(AckError::NotInLog(seq)),
        _ => return Err(AckError::Unreadable),
    };
    if found.alerts.is_empty() {
        return Err(AckError::NoAlert(seq));
    }
    let earlier = found.acks.len();
    match proxy
        .log
        .handle
        .append(Entry::AlertAck {
            of: seq,
            by: by.to_string(),
            note: note.to_string(),
        })
        .await
    {
        Ok(entry) => {
            proxy.metrics.alerts_acknowledged.inc();
            Ok(Acknowledged { entry, earlier })
        }
        Err(e) => Err(AckError::Write(e.to_string())),
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
        Unblock::Lesson { id } => serde_json::json!({"kind": "lesson", "grant": id}),
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
    out["alerts"] = found
        .alerts
        .iter()
        .filter_map(|a| match &a.body {
            Entry::Alert {
                channel,
                sent,
                attempt,
                ..
            } => Some(serde_json::json!({
                "time": crate::decision_log::export::iso(a.time_us),
                "channel": channel,
                "sent": sent,
                "attempt": attempt,
            })),
            _ => None,
        })
        .collect();
    out["acknowledgements"] = found
        .acks
        .iter()
        .filter_map(|a| match &a.body {
            Entry::AlertAck { by, note, .. } => Some(serde_json::json!({
                "time": crate::decision_log::export::iso(a.time_us),
                "by": by,
                "note": note,
            })),
            _ => None,
        })
        .collect();
    out
}

fn refused(audit: &Audit<'_>, what: &str, key: &str, e: StoreError) -> Reply {
    let (status, errors): (StatusCode, Vec<String>) = match e {
        StoreError::Invalid(errors) => (
            StatusCode::BAD_REQUEST,
            errors.0.iter().map(|e| e.kind.to_string()).collect(),
        ),
        e @ (StoreError::RevocationUnexplained
        | StoreError::NoSuchGrant(_)
        | StoreError::Lesson(_)
        | StoreError::Unknown(_)
        | StoreError::NotEtcd(_)) => (StatusCode::BAD_REQUEST, vec![e.to_string()]),
        e @ StoreError::IdTaken { .. } => (StatusCode::CONFLICT, vec![e.to_string()]),
        e @ StoreError::NotYours(_) => (StatusCode::FORBIDDEN, vec![e.to_string()]),
        e @ StoreError::Shape(_) => (StatusCode::INTERNAL_SERVER_ERROR, vec![e.to_string()]),
        StoreError::Io(m) => (StatusCode::INTERNAL_SERVER_ERROR, vec![m.to_string()]),
        StoreError::Etcd(e @ crate::etcd_grants::EtcdError::Contended) => {
            (StatusCode::CONFLICT, vec![e.to_string()])
        }
        // The grants store is down: the grants in force stay, but none can change.
        StoreError::Etcd(e) => (StatusCode::SERVICE_UNAVAILABLE, vec![e.to_string()]),
    };
    audit(
        GrantEvent::ApiRefused(what.into()),
        key,
        key,
        errors.join("; "),
    );
    json(status, serde_json::json!({ "errors": errors }))
}

/// `POST /api/lists/update`'s body; every field may be left out.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListUpdateBody {
    /// Only this source.
    source: Option<String>,
    /// Take an update the shrink guard refuses (not for an illegal category).
    #[serde(default)]
    allow_shrink: bool,
    /// Why: required with `allow_shrink`, and logged.
    reason: Option<String>,
}

/// `/api/lists/…`: the feeds and their updates.
async fn lists(proxy: &Arc<Proxy>, req: Request<Incoming>, token: &AdminToken) -> Reply {
    let path = req.uri().path().trim_end_matches('/').to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/api/lists/sources") => {
            let snap = proxy.live.get();
            let state = crate::feeds::FeedState::read(&snap.policy.lists_dir);
            let sources: Vec<serde_json::Value> = snap
                .settings
                .feeds
                .sources
                .iter()
                .map(|s| {
                    let st = state.sources.get(&s.name).cloned().unwrap_or_default();
                    serde_json::json!({
                        "name": s.name,
                        "url": s.url.to_string(),
                        "format": s.format.as_str(),
                        "category": s.category,
                        "pinned": s.sha256.is_some(),
                        "max_bytes": s.max_bytes,
                        "min_entries": s.min_entries,
                        "max_entries": s.max_entries,
                        "shrink_guard": s.shrink_guard,
                        "last_attempt": st.last_attempt,
                        "last_success": st.last_success,
                        "last_result": st.last_result,
                        "last_detail": st.last_detail,
                        "etag": st.etag,
                        "last_modified": st.last_modified,
                        "entries": st.entries,
                    })
                })
                .collect();
            json(
                StatusCode::OK,
                serde_json::json!({
                    "update_every_secs": snap.settings.feeds.update_every.map(|d| d.as_secs()),
                    "sources": sources,
                }),
            )
        }
        (Method::POST, "/api/lists/update") => {
            let has_body = req
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .is_some_and(|l| l != "0")
                || req.headers().contains_key(hyper::header::TRANSFER_ENCODING);
            let body: ListUpdateBody = if has_body {
                match json_body(req).await {
                    Ok(b) => b,
                    Err(e) => {
                        return json(StatusCode::BAD_REQUEST, serde_json::json!({"errors": [e]}))
                    }
                }
            } else {
                ListUpdateBody::default()
            };
            let reason = body
                .reason
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty());
            if body.allow_shrink && reason.is_none() {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"errors": ["allow_shrink needs a reason (it is logged)"]}),
                );
            }
            let options = crate::feeds::Options {
                only: body.source,
                allow_shrink: if body.allow_shrink {
                    reason.map(str::to_string)
                } else {
                    None
                },
                by: token.name.clone(),
            };
            // In a task of its own: a caller that hangs up does not cut an update off
            // between writing the lists and recording and swapping them in.
            let task = {
                let proxy = proxy.clone();
                tokio::spawn(async move { proxy.update_lists(options).await })
            };
            let result = match task.await {
                Ok(r) => r,
                Err(e) => {
                    return json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({"errors": [format!("the update task failed: {e}")]}),
                    )
                }
            };
            match result {
                Ok(outcomes) => {
                    let list: Vec<serde_json::Value> = outcomes
                        .iter()
                        .map(|o| {
                            serde_json::json!({
                                "source": o.source,
                                "result": o.result.as_str(),
                                "detail": o.detail,
                                "entries": o.entries,
                            })
                        })
                        .collect();
                    json(StatusCode::OK, serde_json::json!({"outcomes": list}))
                }
                Err(e @ super::feeds::NotRun::Busy) => json(
                    StatusCode::CONFLICT,
                    serde_json::json!({"errors": [e.to_string()]}),
                ),
                Err(e) => json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"errors": [e.to_string()]}),
                ),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
