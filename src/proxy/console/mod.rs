//! The web console on the admin listener (`/console/`): the pages the DSL, technicians,
//! teachers and the IT Lead use instead of the CLI and the JSON API.
//!
//! Server-rendered HTML from templates compiled into the binary (minijinja, HTML
//! auto-escaped), no JavaScript. Sign-in is with a local account (`[[console.accounts]]`,
//! argon2) or, when `[[console.directory]]` maps directory groups to roles, the school's
//! directory. A session is a random 256-bit id in an `HttpOnly`, `SameSite=Strict`
//! cookie (`Secure` when the listener serves TLS) with a CSRF token of its own that
//! every form carries; repeated failures lock the account and the address for a window.
//!
//! | page | roles | does |
//! | --- | --- | --- |
//! | `/console/lookup` | technician, viewer, dsl | a block page's reference → the decision, how it ended, and (technician) a prefilled grant form |
//! | `/console/grants` | technician, viewer, it-lead | grants in force with time left, revoke (technician), history |
//! | `/console/grants/new` | technician | the grant form |
//! | `/console/alerts` | dsl | alerts and searches of concern, acknowledgement, per-person drill-down |
//! | `/console/report` | dsl | the weekly report, and its downloads |
//! | `/console/status` | it-lead, technician | version, lists and their age, reloads, the log's health |
//! | `/console/lessons` | teacher | the teacher's own lesson overrides |
//!
//! It does what the API and the CLI do by calling the same functions (`grant_store`,
//! `decision_log::reader`, `report::build`, the API's `acknowledge`), and every sign-in,
//! sign-out, action and refusal is a [`Body::Console`] entry in the decision log.

pub mod settings;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use ring::rand::SecureRandom;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::Proxy;
use crate::decision_log::{Body, StoredAction};
use crate::settings::Role;

type Reply = Response<Full<Bytes>>;

const SESSION_COOKIE: &str = "gatehouse_console";
const SIGN_IN_COOKIE: &str = "gatehouse_console_sign_in";

/// The templates, compiled once. A template that does not compile is a bug in this
/// crate, caught by the test that renders every page.
static TEMPLATES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    // `.html` names are auto-escaped (minijinja's default for them).
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("sign_in.html", include_str!("templates/sign_in.html")),
        ("message.html", include_str!("templates/message.html")),
        ("home.html", include_str!("templates/home.html")),
        ("grant_form.html", include_str!("templates/grant_form.html")),
        ("grant_new.html", include_str!("templates/grant_new.html")),
        ("lookup.html", include_str!("templates/lookup.html")),
        ("grants.html", include_str!("templates/grants.html")),
        ("alerts.html", include_str!("templates/alerts.html")),
        ("person.html", include_str!("templates/person.html")),
        ("report.html", include_str!("templates/report.html")),
        ("status.html", include_str!("templates/status.html")),
        ("lessons.html", include_str!("templates/lessons.html")),
    ] {
        env.add_template(name, text)
            .expect("the console's templates compile");
    }
    env
});

/// A hash no password matches, checked for an unknown account name (see
/// `check_password`).
static UNKNOWN_ACCOUNT_HASH: LazyLock<String> = LazyLock::new(|| {
    super::auth::hash_password("gatehouse: an account that does not exist").unwrap_or_default()
});

/// One signed-in session.
#[derive(Debug, Clone)]
struct Session {
    who: String,
    role: Role,
    csrf: String,
    expires: Instant,
}

/// The console's state: sessions and recent sign-in failures. One per process; a
/// session does not outlive a restart (people sign in again), and each node of a
/// cluster has its own.
pub struct Console {
    /// SHA-256 of the session id → the session: the ids themselves are not kept.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// `account:NAME` / `address:IP` → times of recent failed sign-ins.
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    rng: ring::rand::SystemRandom,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            rng: ring::rand::SystemRandom::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Console {
    /// 256 random bits from the operating system's CSPRNG, as hex.
    fn random(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        self.rng.fill(&mut bytes).ok()?;
        Some(hex::encode(bytes))
    }

    fn session(&self, id: &str) -> Option<Session> {
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let mut sessions = lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.get(&key).cloned()
    }

    fn open(&self, who: &str, role: Role, lifetime: Duration) -> Option<(String, Session)> {
        let id = self.random()?;
        let session = Session {
            who: who.to_string(),
            role,
            csrf: self.random()?,
            expires: Instant::now() + lifetime,
        };
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        lock(&self.sessions).insert(key, session.clone());
        Some((id, session))
    }

    fn close(&self, id: &str) {
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        lock(&self.sessions).remove(&key);
    }

    /// Whether `key` has had `limit` failures within `window`.
    fn locked(&self, key: &str, limit: u32, window: Duration) -> bool {
        let mut failures = lock(&self.failures);
        let now = Instant::now();
        match failures.get_mut(key) {
            Some(times) => {
                times.retain(|t| now.duration_since(*t) < window);
                times.len() >= limit as usize
            }
            None => false,
        }
    }

    fn fail(&self, key: &str) {
        let mut failures = lock(&self.failures);
        // Bounded: a flood of names cannot grow it without end.
        if failures.len() > 100_000 {
            failures.clear();
        }
        failures
            .entry(key.to_string())
            .or_default()
            .push(Instant::now());
    }

    fn succeed(&self, key: &str) {
        lock(&self.failures).remove(key);
    }
}

/// Compares two tokens without an early exit.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The pages, for the role check and the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Home,
    Lookup,
    Grants,
    GrantForm,
    Alerts,
    Report,
    Status,
    Lessons,
}

impl Page {
    const NAV: [Page; 7] = [
        Page::Home,
        Page::Lookup,
        Page::Grants,
        Page::Alerts,
        Page::Report,
        Page::Status,
        Page::Lessons,
    ];

    /// Whether `role` may see this page (and make its changes).
    fn permits(self, role: Role) -> bool {
        use Role::*;
        match self {
            Page::Home => true,
            Page::Lookup => matches!(role, Technician | Viewer | Dsl),
            Page::Grants => matches!(role, Technician | Viewer | ItLead),
            Page::GrantForm => role == Technician,
            Page::Alerts | Page::Report => role == Dsl,
            Page::Status => matches!(role, ItLead | Technician),
            Page::Lessons => role == Teacher,
        }
    }

    fn href(self) -> &'static str {
        match self {
            Page::Home => "/console/",
            Page::Lookup => "/console/lookup",
            Page::Grants => "/console/grants",
            Page::GrantForm => "/console/grants/new",
            Page::Alerts => "/console/alerts",
            Page::Report => "/console/report",
            Page::Status => "/console/status",
            Page::Lessons => "/console/lessons",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Page::Home => "Start",
            Page::Lookup => "Reference lookup",
            Page::Grants => "Grants",
            Page::GrantForm => "Grant access",
            Page::Alerts => "Alerts",
            Page::Report => "Weekly report",
            Page::Status => "Status",
            Page::Lessons => "Lesson overrides",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Page::Home => "",
            Page::Lookup => "turn a block page's reference into the decision and a grant",
            Page::Grants => "grants in force, their time left, and their history",
            Page::GrantForm => "issue a grant against a helpdesk ticket",
            Page::Alerts => "safeguarding alerts and searches of concern, with acknowledgement",
            Page::Report => "the weekly safeguarding report and its downloads",
            Page::Status => "version, lists, reloads and the decision log's health",
            Page::Lessons => "your lesson overrides",
        }
    }
}

/// What a page is rendered with: who is signed in.
struct Ctx<'a> {
    proxy: &'a Proxy,
    who: String,
    role: Role,
    csrf: String,
    peer: IpAddr,
    page: Page,
}

impl Ctx<'_> {
    fn log(&self, action: &str, detail: String) {
        record(
            self.proxy,
            &self.who,
            self.role.as_str(),
            action,
            self.peer,
            detail,
        );
    }

    fn render(&self, status: StatusCode, template: &str, title: &str, extra: Value) -> Reply {
        let nav: Vec<Value> = Page::NAV
            .iter()
            .filter(|p| p.permits(self.role))
            .map(|p| {
                json!({"href": p.href(), "label": p.label(), "about": p.about(), "current": *p == self.page})
            })
            .collect();
        let mut ctx = json!({
            "title": title,
            "school": self.proxy.live.get().policy.school.clone(),
            "who": self.who,
            "role": self.role.as_str(),
            "csrf": self.csrf,
            "nav": nav,
            "errors": [],
        });
        merge(&mut ctx, extra);
        html(status, template, &ctx)
    }

    fn refuse(&self, status: StatusCode, message: &str) -> Reply {
        self.render(
            status,
            "message.html",
            status.canonical_reason().unwrap_or("Refused"),
            json!({"message": message}),
        )
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        into.extend(extra);
    }
}

fn record(proxy: &Proxy, who: &str, role: &str, action: &str, peer: IpAddr, detail: String) {
    proxy.log.handle.append_nowait(Body::Console {
        who: who.to_string(),
        role: role.to_string(),
        action: action.to_string(),
        detail: format!("from {peer}: {detail}"),
    });
}

fn with_headers(mut r: Reply) -> Reply {
    let h = r.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'self'; base-uri 'none'",
        ),
    );
    r
}

fn html(status: StatusCode, template: &str, ctx: &Value) -> Reply {
    let body = TEMPLATES.get_template(template).and_then(|t| t.render(ctx));
    let (status, body) = match body {
        Ok(b) => (status, b),
        Err(e) => {
            tracing::error!(template, error = %e, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Error</title><p>The page could not be rendered.</p>"
                    .to_string(),
            )
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    with_headers(r)
}

fn redirect(to: &str, cookie: Option<String>) -> Reply {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(SET_COOKIE, c);
    }
    with_headers(r)
}

fn cookie_of(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(name: &str, value: &str, max_age: u64, tls: bool) -> String {
    format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if tls { "; Secure" } else { "" }
    )
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A form body (`application/x-www-form-urlencoded`) of at most 64 KiB.
async fn form(req: Request<Incoming>) -> Option<HashMap<String, String>> {
    let body = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .ok()?
        .to_bytes();
    Some(url::form_urlencoded::parse(&body).into_owned().collect())
}

fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(|s| s.trim()).unwrap_or("")
}

/// Serves `/console` and everything under it.
pub(super) async fn handle(
    proxy: &Arc<Proxy>,
    req: Request<Incoming>,
    peer: IpAddr,
    tls: bool,
) -> Reply {
    let snap = proxy.live.get();
    let settings = &snap.settings.console;
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if !settings.enabled {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"the web console is not enabled ([console] in the policy)\n",
        )));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    match (method.clone(), path.as_str()) {
        (Method::GET, "/console") => return redirect("/console/", None),
        (Method::GET, "/console/sign-in") => {
            return sign_in_page(proxy, tls, "", &[], StatusCode::OK)
        }
        (Method::POST, "/console/sign-in") => return sign_in(proxy, req, peer, tls).await,
        _ => {}
    }
    let session_id = cookie_of(&req, SESSION_COOKIE);
    let Some(session) = session_id
        .as_deref()
        .and_then(|id| proxy.console.session(id))
    else {
        if method == Method::POST {
            record(
                proxy,
                "-",
                "-",
                "refused",
                peer,
                format!("POST {path} without a session"),
            );
            let mut r = html(
                StatusCode::FORBIDDEN,
                "message.html",
                &json!({"title": "Forbidden", "school": snap.policy.school.clone(), "errors": [], "message": "Sign in first."}),
            );
            *r.status_mut() = StatusCode::FORBIDDEN;
            return r;
        }
        return redirect("/console/sign-in", None);
    };
    let page = match path.as_str() {
        "/console/" => Page::Home,
        "/console/lookup" => Page::Lookup,
        "/console/grants" if method == Method::GET => Page::Grants,
        "/console/grants" | "/console/grants/new" | "/console/grants/revoke" => Page::GrantForm,
        "/console/alerts" | "/console/alerts/person" | "/console/alerts/ack" => Page::Alerts,
        "/console/report" | "/console/report/download" => Page::Report,
        "/console/status" => Page::Status,
        "/console/lessons" => Page::Lessons,
        "/console/sign-out" => Page::Home,
        _ => {
            let ctx = Ctx {
                proxy,
                who: session.who.clone(),
                role: session.role,
                csrf: session.csrf.clone(),
                peer,
                page: Page::Home,
            };
            return ctx.refuse(StatusCode::NOT_FOUND, "There is no such page.");
        }
    };
    let ctx = Ctx {
        proxy,
        who: session.who.clone(),
        role: session.role,
        csrf: session.csrf.clone(),
        peer,
        page,
    };
    if !page.permits(session.role) {
        ctx.log(
            "refused",
            format!(
                "{method} {path}: not for the {} role",
                session.role.as_str()
            ),
        );
        return ctx.refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "This page is not for the {} role. Ask your IT Lead if you need it.",
                session.role.as_str()
            ),
        );
    }
    if method == Method::POST {
        let Some(form) = form(req).await else {
            return ctx.refuse(StatusCode::BAD_REQUEST, "The form could not be read.");
        };
        if !same(field(&form, "csrf"), &session.csrf) {
            ctx.log(
                "refused",
                format!("POST {path}: missing or wrong CSRF token"),
            );
            return ctx.refuse(
                StatusCode::FORBIDDEN,
                "This form was not sent from the console page it belongs to (its CSRF token is missing or wrong). Nothing was changed.",
            );
        }
        return match path.as_str() {
            "/console/sign-out" => {
                if let Some(id) = &session_id {
                    proxy.console.close(id);
                }
                ctx.log("sign-out", String::new());
                redirect(
                    "/console/sign-in",
                    Some(set_cookie(SESSION_COOKIE, "", 0, tls)),
                )
            }
            "/console/grants" => grant_add(&ctx, &form).await,
            "/console/grants/revoke" => grant_revoke(&ctx, &form).await,
            "/console/alerts/ack" => ack(&ctx, &form).await,
            _ => ctx.refuse(StatusCode::METHOD_NOT_ALLOWED, "This page takes no form."),
        };
    }
    if method != Method::GET {
        return ctx.refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "Only GET and POST are used here.",
        );
    }
    let q = query(&req);
    match path.as_str() {
        "/console/" => ctx.render(StatusCode::OK, "home.html", "Gatehouse console", json!({})),
        "/console/lookup" => lookup(&ctx, &q).await,
        "/console/grants" => grants(&ctx, &q).await,
        "/console/grants/new" => grant_new(&ctx, &q).await,
        "/console/alerts" => alerts(&ctx, &q).await,
        "/console/alerts/person" => person(&ctx, &q).await,
        "/console/report" => report(&ctx, &q),
        "/console/report/download" => report_download(&ctx, &q).await,
        "/console/status" => status(&ctx).await,
        "/console/lessons" => lessons(&ctx).await,
        _ => ctx.refuse(StatusCode::NOT_FOUND, "There is no such page."),
    }
}

/// The sign-in page, with a fresh sign-in CSRF token in a cookie of its own (the
/// double-submit pattern: there is no session yet to keep it in).
fn sign_in_page(
    proxy: &Proxy,
    tls: bool,
    name: &str,
    errors: &[String],
    status: StatusCode,
) -> Reply {
    let Some(token) = proxy.console.random() else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"no randomness\n")));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return r;
    };
    let mut r = html(
        status,
        "sign_in.html",
        &json!({
            "title": "Sign in",
            "school": proxy.live.get().policy.school.clone(),
            "csrf": token,
            "name": name,
            "errors": errors,
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&set_cookie(SIGN_IN_COOKIE, &token, 3600, tls)) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

enum Checked {
    Ok(Role),
    Refused(String),
}

/// Checks a name and password against the local accounts, then the directory.
async fn check_password(proxy: &Proxy, name: &str, password: &str) -> Checked {
    let snap = proxy.live.get();
    let settings = &snap.settings.console;
    if let Some(account) = settings.accounts.iter().find(|a| a.name == name) {
        let (hash, password, role) = (account.hash.clone(), password.to_string(), account.role);
        let ok =
            tokio::task::spawn_blocking(move || super::auth::verify_password(&password, &hash))
                .await
                .unwrap_or(false);
        return if ok {
            Checked::Ok(role)
        } else {
            Checked::Refused("wrong password".into())
        };
    }
    let (Some(directory), false) = (&snap.settings.directory, settings.directory.is_empty()) else {
        // As long as a wrong password takes, so that the time taken does not say
        // which account names exist.
        let password = password.to_string();
        let _ = tokio::task::spawn_blocking(move || {
            super::auth::verify_password(&password, &UNKNOWN_ACCOUNT_HASH)
        })
        .await;
        return Checked::Refused("no such account".into());
    };
    match proxy.directory.sign_in(directory, name, password).await {
        crate::directory::SignIn::Ok(account) => settings
            .directory
            .iter()
            .find(|(pattern, _)| {
                account
                    .normalised_groups
                    .iter()
                    .any(|g| pattern.matches_normalised(g))
            })
            .map_or_else(
                || Checked::Refused("directory account in no console group".into()),
                |(_, role)| Checked::Ok(*role),
            ),
        crate::directory::SignIn::Refused(e) => Checked::Refused(format!("directory: {e}")),
        crate::directory::SignIn::Unavailable(e) => {
            Checked::Refused(format!("directory unavailable: {e}"))
        }
    }
}

async fn sign_in(proxy: &Arc<Proxy>, req: Request<Incoming>, peer: IpAddr, tls: bool) -> Reply {
    let expected = cookie_of(&req, SIGN_IN_COOKIE);
    let Some(form) = form(req).await else {
        return sign_in_page(
            proxy,
            tls,
            "",
            &["The form could not be read.".into()],
            StatusCode::BAD_REQUEST,
        );
    };
    let name = field(&form, "name").to_string();
    if !expected.is_some_and(|e| same(&e, field(&form, "csrf"))) {
        record(
            proxy,
            &name,
            "-",
            "refused",
            peer,
            "sign-in without its CSRF token".into(),
        );
        return sign_in_page(
            proxy,
            tls,
            &name,
            &[
                "The sign-in form had expired or was not sent from this page. Please try again."
                    .into(),
            ],
            StatusCode::FORBIDDEN,
        );
    }
    let password = form.get("password").cloned().unwrap_or_default();
    let snap = proxy.live.get();
    let settings = &snap.settings.console;
    let account_key = format!("account:{}", name.to_lowercase());
    let address_key = format!("address:{peer}");
    let (limit, window) = (settings.lockout_failures, settings.lockout_window);
    if proxy.console.locked(&account_key, limit, window)
        || proxy.console.locked(&address_key, limit, window)
    {
        proxy
            .metrics
            .console_sign_ins
            .with_label_values(&["locked"])
            .inc();
        record(
            proxy,
            &name,
            "-",
            "sign-in locked",
            peer,
            format!("{limit} failures within {} minutes", window.as_secs() / 60),
        );
        return sign_in_page(
            proxy,
            tls,
            &name,
            &[format!(
                "Too many failed sign-ins for this account or from this computer. Try again in {} minutes.",
                window.as_secs().div_ceil(60)
            )],
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    if name.is_empty() || name.len() > 200 || password.is_empty() {
        return sign_in_page(
            proxy,
            tls,
            &name,
            &["Type your account name and password.".into()],
            StatusCode::BAD_REQUEST,
        );
    }
    match check_password(proxy, &name, &password).await {
        Checked::Ok(role) => {
            proxy.console.succeed(&account_key);
            let Some((id, _)) = proxy.console.open(&name, role, settings.session) else {
                return sign_in_page(
                    proxy,
                    tls,
                    &name,
                    &["The console could not start a session.".into()],
                    StatusCode::SERVICE_UNAVAILABLE,
                );
            };
            proxy
                .metrics
                .console_sign_ins
                .with_label_values(&["ok"])
                .inc();
            record(proxy, &name, role.as_str(), "sign-in", peer, "ok".into());
            redirect(
                "/console/",
                Some(set_cookie(
                    SESSION_COOKIE,
                    &id,
                    settings.session.as_secs(),
                    tls,
                )),
            )
        }
        Checked::Refused(why) => {
            proxy.console.fail(&account_key);
            proxy.console.fail(&address_key);
            proxy
                .metrics
                .console_sign_ins
                .with_label_values(&["failed"])
                .inc();
            record(proxy, &name, "-", "sign-in failed", peer, why);
            sign_in_page(
                proxy,
                tls,
                &name,
                &["The account name or password is wrong.".into()],
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

fn time_text(proxy: &Proxy, us: i64) -> String {
    let tz = proxy.live.get().policy.timezone;
    DateTime::from_timestamp_micros(us)
        .map(|t| {
            t.with_timezone(&tz)
                .format("%a %d %b %Y %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

fn person_of(d: &crate::decision_log::Decision) -> String {
    match &d.user {
        Some(u) => format!("{u} ({})", d.client),
        None => d.client.to_string(),
    }
}

/// The URL as the console may show it: an `illegal` category's URL is never shown in
/// full, only its host (as in the report).
fn shown_url(proxy: &Proxy, d: &crate::decision_log::Decision) -> String {
    let snap = proxy.live.get();
    let illegal = d.categories.iter().any(|c| {
        snap.policy.category_id(c).is_some_and(|id| {
            snap.policy.category(id).severity == crate::core::category::Severity::Illegal
        })
    });
    if illegal {
        crate::core::host::Target::parse(&d.url)
            .or_else(|_| crate::core::host::Target::from_authority(&d.url))
            .map(|t| format!("{} (illegal category: host only)", t.host))
            .unwrap_or_else(|_| "(illegal category)".into())
    } else {
        d.url.clone()
    }
}

/// The grant form's values, prefilled from a decision when there is one.
fn grant_form(
    proxy: &Proxy,
    reference: &str,
    d: Option<&crate::decision_log::Decision>,
    typed: Option<&HashMap<String, String>>,
) -> Value {
    let get = |k: &str| typed.map(|f| field(f, k).to_string()).unwrap_or_default();
    let mut scopes = Vec::new();
    let mut site = get("site");
    if let Some(d) = d {
        if let crate::decision::Unblock::Grant {
            site: s,
            user,
            group,
        } = crate::decision::unblock(d)
        {
            if site.is_empty() {
                site = s;
            }
            if let Some(u) = user {
                scopes.push(json!({"value": format!("user:{u}"), "label": format!("Only {u}"), "checked": true}));
            }
            let first = scopes.is_empty();
            scopes.push(json!({"value": format!("group:{group}"), "label": format!("Everyone in {group}"), "checked": first}));
        }
    }
    if scopes.is_empty() {
        let snap = proxy.live.get();
        for (i, (_, g)) in snap.policy.groups().enumerate() {
            let g = &g.name;
            scopes.push(json!({"value": format!("group:{g}"), "label": format!("Everyone in {g}"), "checked": i == 0}));
        }
    }
    let chosen = get("duration");
    let durations: Vec<Value> = durations(proxy, Utc::now())
        .into_iter()
        .map(|(value, label, _)| json!({"value": value, "label": label, "selected": value == chosen}))
        .collect();
    json!({
        "reference": reference,
        "ticket": get("ticket"),
        "reason": get("reason"),
        "site": site,
        "scopes": scopes,
        "durations": durations,
    })
}

/// The duration presets: (value, label, expiry). "End of lesson" is offered while a
/// lesson of the `[teachers] lessons` schedule is on.
fn durations(proxy: &Proxy, now: DateTime<Utc>) -> Vec<(&'static str, String, DateTime<Utc>)> {
    let snap = proxy.live.get();
    let policy = &snap.policy;
    let tz = policy.timezone;
    let mut out = Vec::new();
    if let Some(end) = policy
        .teachers
        .lessons
        .and_then(|s| policy.schedule(s).current_window_end(now))
    {
        out.push((
            "lesson",
            format!(
                "Until the end of this lesson ({})",
                end.with_timezone(&tz).format("%H:%M")
            ),
            end,
        ));
    }
    out.push(("hour", "One hour".into(), now + chrono::Duration::hours(1)));
    let end_of_day = now
        .with_timezone(&tz)
        .date_naive()
        .and_hms_opt(23, 59, 0)
        .and_then(|t| t.and_local_timezone(tz).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now + chrono::Duration::hours(8));
    out.push(("day", "Until the end of today".into(), end_of_day));
    out.push(("week", "One week".into(), now + chrono::Duration::days(7)));
    out.push((
        "two-weeks",
        "Two weeks".into(),
        now + chrono::Duration::days(14),
    ));
    out
}

struct Looked {
    reference: String,
    found: crate::decision_log::reader::Found,
}

async fn find(proxy: &Proxy, typed: &str) -> Result<Looked, String> {
    let seq =
        crate::decision::parse_reference(typed).map_err(|e| format!("Reference {typed:?}: {e}"))?;
    let reference = crate::decision::format_reference(seq);
    let dir = proxy.live.get().settings.log.dir.clone();
    match tokio::task::spawn_blocking(move || crate::decision_log::reader::find(&dir, seq)).await {
        Ok(Ok(Some(found))) => Ok(Looked { reference, found }),
        Ok(Ok(None)) => Err(format!(
            "Reference {reference} (#{seq}) is not in this node's decision log."
        )),
        _ => Err("The decision log could not be read.".into()),
    }
}

fn decision_view(proxy: &Proxy, looked: &Looked) -> Value {
    let f = &looked.found;
    let Body::Decision(d) = &f.entry.body else {
        return json!({"reference": looked.reference, "time": time_text(proxy, f.entry.time_us), "action": "not a decision"});
    };
    let completion = match f.completion.as_ref().map(|c| &c.body) {
        Some(Body::Completion {
            status,
            bytes_down,
            duration_us,
            ..
        }) => format!(
            "status {status}, {bytes_down} bytes down, {:.1} s",
            *duration_us as f64 / 1e6
        ),
        _ if d.action == StoredAction::Block => format!("blocked (status {})", d.status),
        _ => "no completion recorded (still open, or not found)".into(),
    };
    use crate::decision::Unblock;
    let unblock = match crate::decision::unblock(d) {
        Unblock::Grant { site, user, group } => format!(
            "a grant on {site} for {}",
            user.map_or_else(|| format!("group {group}"), |u| format!("{u} (or group {group})"))
        ),
        Unblock::Illegal => "nothing: illegal content is blocked for everyone, always. The DSL should know of the attempt.".into(),
        Unblock::ByAddress => "asked for by IP address: find out which named site was meant".into(),
        Unblock::NotTheSite => "refused for how it connected, not for the site: a grant does not change that".into(),
        Unblock::Lesson { id } => format!("a teacher's lesson block ({id}); it ends with the lesson"),
        Unblock::Nothing => "it was not blocked".into(),
    };
    json!({
        "reference": looked.reference,
        "time": time_text(proxy, f.entry.time_us),
        "person": person_of(d),
        "group": d.group,
        "method": d.method,
        "url": shown_url(proxy, d),
        "action": d.action.as_str(),
        "reason": d.reason.to_string(),
        "categories": if d.categories.is_empty() { "none".to_string() } else { d.categories.join(", ") },
        "grant": d.grant.clone().unwrap_or_else(|| "none".into()),
        "completion": completion,
        "alerts": if f.alerts.is_empty() { "none".to_string() } else {
            format!("{} sent, {} acknowledgement(s)", f.alerts.len(), f.acks.len())
        },
        "unblock": unblock,
    })
}

async fn lookup(ctx: &Ctx<'_>, q: &HashMap<String, String>) -> Reply {
    let typed = q.get("reference").map(|s| s.trim()).unwrap_or("");
    if typed.is_empty() {
        return ctx.render(
            StatusCode::OK,
            "lookup.html",
            "Reference lookup",
            json!({"typed": ""}),
        );
    }
    match find(ctx.proxy, typed).await {
        Ok(looked) => {
            ctx.log("lookup", format!("reference {}", looked.reference));
            let decision = decision_view(ctx.proxy, &looked);
            let form = match (&looked.found.entry.body, Page::GrantForm.permits(ctx.role)) {
                (Body::Decision(d), true)
                    if matches!(
                        crate::decision::unblock(d),
                        crate::decision::Unblock::Grant { .. }
                    ) =>
                {
                    grant_form(ctx.proxy, &looked.reference, Some(d), None)
                }
                _ => Value::Null,
            };
            ctx.render(
                StatusCode::OK,
                "lookup.html",
                "Reference lookup",
                json!({"typed": typed, "decision": decision, "form": form}),
            )
        }
        Err(e) => ctx.render(
            StatusCode::NOT_FOUND,
            "lookup.html",
            "Reference lookup",
            json!({"typed": typed, "errors": [e]}),
        ),
    }
}

async fn grant_new(ctx: &Ctx<'_>, q: &HashMap<String, String>) -> Reply {
    let typed = q.get("reference").map(|s| s.trim()).unwrap_or("");
    let (decision, d, errors) = if typed.is_empty() {
        (Value::Null, None, vec![])
    } else {
        match find(ctx.proxy, typed).await {
            Ok(looked) => {
                let view = decision_view(ctx.proxy, &looked);
                let d = match looked.found.entry.body {
                    Body::Decision(d) => Some(d),
                    _ => None,
                };
                (view, d, vec![])
            }
            Err(e) => (Value::Null, None, vec![e]),
        }
    };
    let reference = decision["reference"].as_str().unwrap_or("").to_string();
    ctx.render(
        StatusCode::OK,
        "grant_new.html",
        "Grant access",
        json!({"decision": decision, "form": grant_form(ctx.proxy, &reference, d.as_ref(), None), "errors": errors}),
    )
}

async fn grant_add(ctx: &Ctx<'_>, form: &HashMap<String, String>) -> Reply {
    let now = Utc::now();
    let mut errors = Vec::new();
    let mut grant = crate::grant_store::NewGrant {
        ticket: field(form, "ticket").to_string(),
        issued_by: ctx.who.clone(),
        reason: field(form, "reason").to_string(),
        expires: now,
        ..Default::default()
    };
    match field(form, "scope").split_once(':') {
        Some(("user", u)) if !u.is_empty() => grant.users.push(u.to_string()),
        Some(("group", g)) if !g.is_empty() => grant.groups.push(g.to_string()),
        _ => errors.push("Choose who the grant covers.".to_string()),
    }
    let site = field(form, "site");
    if site.is_empty() {
        errors.push("Name the site the grant opens.".into());
    } else {
        grant.sites.push(site.to_string());
    }
    match durations(ctx.proxy, now)
        .into_iter()
        .find(|(v, _, _)| *v == field(form, "duration"))
    {
        Some((_, _, end)) => grant.expires = end,
        None => errors.push("Choose how long the grant lasts.".into()),
    }
    if errors.is_empty() {
        let snap = ctx.proxy.live.get();
        let g = grant.clone();
        match tokio::task::spawn_blocking(move || crate::grant_store::add(&snap, &g, now)).await {
            Ok(Ok(id)) => {
                ctx.proxy.reload_grants();
                ctx.log(
                    "grant",
                    format!(
                        "{id} ticket {} for {} on {} until {}",
                        grant.ticket,
                        field(form, "scope"),
                        site,
                        grant.expires.to_rfc3339()
                    ),
                );
                return redirect(&format!("/console/grants?made={id}"), None);
            }
            Ok(Err(crate::grant_store::StoreError::Invalid(list))) => {
                errors.extend(list.0.iter().map(|e| e.kind.to_string()));
            }
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(_) => errors.push("internal error".into()),
        }
    }
    ctx.log(
        "refused",
        format!("grant ticket {:?}: {}", grant.ticket, errors.join("; ")),
    );
    let reference = field(form, "reference").to_string();
    let d = match find(ctx.proxy, &reference).await {
        Ok(Looked { found, .. }) => match found.entry.body {
            Body::Decision(d) => Some(d),
            _ => None,
        },
        Err(_) => None,
    };
    ctx.render(
        StatusCode::BAD_REQUEST,
        "grant_new.html",
        "Grant access",
        json!({"decision": Value::Null, "form": grant_form(ctx.proxy, &reference, d.as_ref(), Some(form)), "errors": errors}),
    )
}

async fn grant_revoke(ctx: &Ctx<'_>, form: &HashMap<String, String>) -> Reply {
    let id = field(form, "id").to_string();
    let reason = field(form, "reason").to_string();
    let snap = ctx.proxy.live.get();
    let (by, id2, reason2) = (ctx.who.clone(), id.clone(), reason.clone());
    let result = tokio::task::spawn_blocking(move || {
        crate::grant_store::revoke(&snap, &id2, &by, &reason2, Utc::now())
    })
    .await;
    match result {
        Ok(Ok(())) => {
            ctx.proxy.reload_grants();
            ctx.log("revoke", format!("{id}: {reason}"));
            redirect(&format!("/console/grants?revoked={id}"), None)
        }
        Ok(Err(e)) => {
            ctx.log("refused", format!("revoke {id}: {e}"));
            grants_page(ctx, StatusCode::BAD_REQUEST, vec![e.to_string()], None).await
        }
        Err(_) => ctx.refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

async fn grants(ctx: &Ctx<'_>, q: &HashMap<String, String>) -> Reply {
    let notice = if let Some(id) = q.get("made") {
        Some(format!("Grant {id} issued; it is in force now."))
    } else {
        q.get("revoked").map(|id| format!("Grant {id} revoked."))
    };
    grants_page(ctx, StatusCode::OK, vec![], notice).await
}

async fn grants_page(
    ctx: &Ctx<'_>,
    status: StatusCode,
    mut errors: Vec<String>,
    notice: Option<String>,
) -> Reply {
    let snap = ctx.proxy.live.get();
    let rows = match tokio::task::spawn_blocking(move || {
        crate::grant_store::list(&snap, Utc::now())
    })
    .await
    {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            errors.push(e.to_string());
            vec![]
        }
        Err(_) => vec![],
    };
    use crate::grant_store::GrantState;
    let view = |r: &crate::grant_store::GrantRow| {
        let covers = crate::core::grants::describe_terms(&[
            ("groups", r.groups.clone()),
            ("users", r.users.clone()),
            ("networks", r.subnets.clone()),
            ("classrooms", r.classrooms.clone()),
        ]);
        let opens = crate::core::grants::describe_terms(&[
            ("sites", r.sites.clone()),
            ("categories", r.categories.clone()),
        ]);
        json!({
            "id": r.id, "state": r.state.as_str(), "ticket": r.ticket, "covers": covers,
            "opens": if r.effect == "block" { format!("blocks {opens}") } else { opens },
            "reason": r.reason, "issued_by": r.issued_by,
            "time_left": r.time_left.clone().unwrap_or_else(|| format!("starts {}", r.starts.clone().unwrap_or_default())),
            "ended": match (&r.revoked_by, &r.revoke_reason) {
                (Some(by), Some(why)) => format!("revoked by {by}: {why}"),
                _ => format!("expired {}", r.expires),
            },
        })
    };
    let active: Vec<Value> = rows
        .iter()
        .filter(|r| matches!(r.state, GrantState::Active | GrantState::Future))
        .map(view)
        .collect();
    let history: Vec<Value> = rows
        .iter()
        .filter(|r| matches!(r.state, GrantState::Expired | GrantState::Revoked))
        .rev()
        .map(view)
        .collect();
    ctx.render(
        status,
        "grants.html",
        "Grants",
        json!({
            "active": active, "history": history, "errors": errors, "notice": notice,
            "can_revoke": Page::GrantForm.permits(ctx.role),
        }),
    )
}

async fn ack(ctx: &Ctx<'_>, form: &HashMap<String, String>) -> Reply {
    let typed = field(form, "reference");
    let note = field(form, "note");
    let seq = match crate::decision::parse_reference(typed) {
        Ok(seq) => seq,
        Err(e) => {
            return alerts_page(
                ctx,
                7,
                StatusCode::BAD_REQUEST,
                vec![format!("Reference {typed:?}: {e}")],
                None,
            )
            .await
        }
    };
    if note.len() > 2000 {
        return alerts_page(
            ctx,
            7,
            StatusCode::BAD_REQUEST,
            vec!["The note is too long (2000 bytes at most).".into()],
            None,
        )
        .await;
    }
    let reference = crate::decision::format_reference(seq);
    match super::admin::acknowledge(ctx.proxy, seq, &ctx.who, note).await {
        Ok(_) => {
            ctx.log("ack", format!("alerts about {reference}: {note}"));
            redirect(&format!("/console/alerts?acknowledged={reference}"), None)
        }
        Err(e) => {
            ctx.log("refused", format!("ack {reference}: {e}"));
            alerts_page(ctx, 7, StatusCode::BAD_REQUEST, vec![e.to_string()], None).await
        }
    }
}

async fn alerts(ctx: &Ctx<'_>, q: &HashMap<String, String>) -> Reply {
    let days = q
        .get("days")
        .and_then(|d| d.trim().parse::<u32>().ok())
        .unwrap_or(7)
        .clamp(1, 90);
    let notice = q
        .get("acknowledged")
        .map(|r| format!("Alerts about {r} acknowledged."));
    alerts_page(ctx, days, StatusCode::OK, vec![], notice).await
}

/// What the alerts page shows, from one read of the log.
#[derive(Default)]
struct Concerns {
    /// Alerted decision seq → (first alert time, channels delivered).
    alerted: HashMap<u64, (i64, Vec<String>)>,
    acks: HashMap<u64, Vec<String>>,
    /// Decisions that alerted or had search terms, by seq.
    decisions: Vec<(u64, i64, crate::decision_log::Decision)>,
}

fn concerns(dir: &std::path::Path, since_us: i64) -> Result<Concerns, String> {
    use crate::decision_log::reader;
    let mut c = Concerns::default();
    // First pass: which decisions alerted, and their acknowledgements.
    for (_, e) in reader::entries(dir).map_err(|e| e.to_string())? {
        if e.time_us < since_us {
            continue;
        }
        match e.body {
            Body::Alert {
                of, sent, channel, ..
            } if of != 0 => {
                let a = c.alerted.entry(of).or_insert((e.time_us, Vec::new()));
                if sent && !a.1.contains(&channel) {
                    a.1.push(channel);
                }
            }
            Body::AlertAck { of, by, note } => {
                c.acks.entry(of).or_default().push(if note.is_empty() {
                    by
                } else {
                    format!("{by}: {note}")
                });
            }
            _ => {}
        }
    }
    // Second pass: the decisions they are about, and searches of concern. An alert
    // can be about a decision made before the window: those are read too.
    let earliest = since_us - 25 * 3600 * 1_000_000;
    for (_, e) in reader::entries(dir).map_err(|e| e.to_string())? {
        if e.time_us < earliest {
            continue;
        }
        if let Body::Decision(d) = e.body {
            if c.alerted.contains_key(&e.seq) || (!d.terms.is_empty() && e.time_us >= since_us) {
                c.decisions.push((e.seq, e.time_us, d));
            }
        }
    }
    Ok(c)
}

fn person_href(d: &crate::decision_log::Decision, us: i64) -> String {
    let who = d.user.clone().unwrap_or_else(|| d.client.to_string());
    format!(
        "/console/alerts/person?who={}&at={us}",
        url::form_urlencoded::byte_serialize(who.as_bytes()).collect::<String>()
    )
}

async fn alerts_page(
    ctx: &Ctx<'_>,
    days: u32,
    status: StatusCode,
    mut errors: Vec<String>,
    notice: Option<String>,
) -> Reply {
    let dir = ctx.proxy.live.get().settings.log.dir.clone();
    let since = Utc::now().timestamp_micros() - i64::from(days) * 86_400_000_000;
    let c = match tokio::task::spawn_blocking(move || concerns(&dir, since)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            errors.push(format!("The decision log could not be read: {e}"));
            Concerns::default()
        }
        Err(_) => Concerns::default(),
    };
    let mut alerts = Vec::new();
    let mut searches = Vec::new();
    for (seq, us, d) in c.decisions.iter().rev() {
        if let Some((_, channels)) = c.alerted.get(seq) {
            alerts.push(json!({
                "time": time_text(ctx.proxy, *us),
                "reference": crate::decision::format_reference(*seq),
                "person": person_of(d),
                "person_href": person_href(d, *us),
                "group": d.group,
                "categories": d.categories.join(", "),
                "site": shown_url(ctx.proxy, d),
                "delivered": if channels.is_empty() { "not yet (retrying)".to_string() } else { channels.join(", ") },
                "acks": c.acks.get(seq).map(|a| a.join("; ")).unwrap_or_else(|| "not yet".into()),
            }));
        }
        if !d.terms.is_empty() {
            searches.push(json!({
                "time": time_text(ctx.proxy, *us),
                "person": person_of(d),
                "person_href": person_href(d, *us),
                "group": d.group,
                "terms": d.terms.join(", "),
                "categories": d.categories.join(", "),
                "action": d.action.as_str(),
            }));
        }
    }
    ctx.render(
        status,
        "alerts.html",
        "Alerts and searches of concern",
        json!({"days": days, "alerts": alerts, "searches": searches, "errors": errors, "notice": notice}),
    )
}

async fn person(ctx: &Ctx<'_>, q: &HashMap<String, String>) -> Reply {
    let who = q
        .get("who")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let Some(at) = q.get("at").and_then(|a| a.parse::<i64>().ok()) else {
        return ctx.refuse(
            StatusCode::BAD_REQUEST,
            "Which event? (the link from the alerts page says)",
        );
    };
    let (from, to) = (at - 1_800_000_000, at + 1_800_000_000);
    let dir = ctx.proxy.live.get().settings.log.dir.clone();
    let w = who.clone();
    let rows = tokio::task::spawn_blocking(
        move || -> Result<Vec<(u64, i64, crate::decision_log::Decision)>, String> {
            let mut out = Vec::new();
            for (_, e) in crate::decision_log::reader::entries(&dir).map_err(|e| e.to_string())? {
                if e.time_us < from || e.time_us > to {
                    continue;
                }
                if let Body::Decision(d) = e.body {
                    let theirs = match &d.user {
                        Some(u) => *u == w,
                        None => d.client.to_string() == w,
                    };
                    if theirs {
                        out.push((e.seq, e.time_us, d));
                    }
                }
            }
            Ok(out)
        },
    )
    .await;
    let (rows, errors) = match rows {
        Ok(Ok(r)) => (r, vec![]),
        Ok(Err(e)) => (
            vec![],
            vec![format!("The decision log could not be read: {e}")],
        ),
        Err(_) => (vec![], vec![]),
    };
    ctx.log(
        "drill-down",
        format!("{who} around {}", time_text(ctx.proxy, at)),
    );
    let rows: Vec<Value> = rows
        .iter()
        .map(|(seq, us, d)| {
            json!({
                "time": time_text(ctx.proxy, *us),
                "reference": crate::decision::format_reference(*seq),
                "url": shown_url(ctx.proxy, d),
                "categories": d.categories.join(", "),
                "terms": d.terms.join(", "),
                "action": d.action.as_str(),
                "reason": d.reason.to_string(),
            })
        })
        .collect();
    ctx.render(
        StatusCode::OK,
        "person.html",
        &format!("{who}: the hour around the event"),
        json!({"person": who, "from": time_text(ctx.proxy, from), "to": time_text(ctx.proxy, to), "rows": rows, "errors": errors}),
    )
}

const FORMATS: [(&str, &str); 4] = [
    ("html", "HTML"),
    ("csv", "CSV"),
    ("json", "JSON"),
    ("md", "Markdown"),
];

fn period_of(
    ctx: &Ctx<'_>,
    q: &HashMap<String, String>,
) -> Result<(String, crate::report::Period), String> {
    let tz = ctx.proxy.live.get().policy.timezone;
    match q.get("week").map(|w| w.trim()).filter(|w| !w.is_empty()) {
        Some(w) => crate::report::iso_week(w, tz)
            .map(|p| (w.to_string(), p))
            .map_err(|e| format!("Week {w:?}: {e}")),
        None => {
            let p = crate::report::last_week(tz, Utc::now());
            use chrono::Datelike;
            let w = p.from.with_timezone(&tz).date_naive().iso_week();
            Ok((format!("{}-W{:02}", w.year(), w.week()), p))
        }
    }
}

fn report(ctx: &Ctx<'_>, q: &HashMap<String, String>) -> Reply {
    let formats: Vec<Value> = FORMATS
        .iter()
        .map(|(v, l)| json!({"value": v, "label": l}))
        .collect();
    match period_of(ctx, q) {
        Ok((week, _)) => ctx.render(
            StatusCode::OK,
            "report.html",
            &format!("Weekly report {week}"),
            json!({"week": week, "formats": formats}),
        ),
        Err(e) => ctx.render(
            StatusCode::BAD_REQUEST,
            "report.html",
            "Weekly report",
            json!({"week": q.get("week").cloned().unwrap_or_default(), "formats": formats, "errors": [e]}),
        ),
    }
}

async fn report_download(ctx: &Ctx<'_>, q: &HashMap<String, String>) -> Reply {
    let (week, period) = match period_of(ctx, q) {
        Ok(p) => p,
        Err(e) => return ctx.refuse(StatusCode::BAD_REQUEST, &e),
    };
    let format = q.get("format").map(String::as_str).unwrap_or("html");
    let Some((format, _)) = FORMATS.iter().find(|(f, _)| *f == format) else {
        return ctx.refuse(
            StatusCode::BAD_REQUEST,
            "The format is html, csv, json or md.",
        );
    };
    let snap = ctx.proxy.live.get();
    let dirs = vec![snap.settings.log.dir.clone()];
    let rep = tokio::task::spawn_blocking(move || {
        crate::report::build(&snap, period, &dirs, Utc::now()).0
    })
    .await;
    let Ok(rep) = rep else {
        return ctx.refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The report could not be built.",
        );
    };
    let (body, mime) = match *format {
        "html" => (rep.html(), "text/html; charset=utf-8"),
        "csv" => (rep.csv(), "text/csv; charset=utf-8"),
        "json" => (
            serde_json::to_string_pretty(&rep).unwrap_or_default() + "\n",
            "application/json",
        ),
        _ => (rep.markdown(), "text/markdown; charset=utf-8"),
    };
    let inline = q.get("inline").is_some() && *format == "html";
    if !inline {
        ctx.log("report", format!("{week} as {format}"));
    }
    let mut r = with_headers(Response::new(Full::new(Bytes::from(body))));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(mime));
    if !inline {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"gatehouse-report-{week}.{format}\""
        )) {
            r.headers_mut().insert("content-disposition", v);
        }
    }
    r
}

async fn status(ctx: &Ctx<'_>) -> Reply {
    use std::sync::atomic::Ordering::Relaxed;
    let snap = ctx.proxy.live.get();
    let loaded = ctx.proxy.metrics.lists_loaded.get();
    let stats = &ctx.proxy.log.handle.stats;
    let log_health = format!(
        "{}: {} entries written, {} write failures, {} lost, {} waiting, last fsync {:.1} ms",
        if stats.failing.load(Relaxed) {
            "FAILING (not writable)"
        } else {
            "writable"
        },
        stats.written.load(Relaxed),
        stats.write_failures.load(Relaxed),
        stats.lost.load(Relaxed),
        ctx.proxy.log.handle.queue_depth(),
        stats.last_fsync_us.load(Relaxed) as f64 / 1000.0,
    );
    let categories: Vec<Value> = snap
        .policy
        .categories()
        .map(|(id, def)| {
            let c = snap.report.counts.get(id.index());
            json!({
                "name": def.category.name,
                "severity": format!("{:?}", def.category.severity).to_lowercase(),
                "domains": c.map_or(0, |c| c.domains),
                "urls": c.map_or(0, |c| c.urls),
                "hashes": c.map_or(0, |c| c.hashes),
                "expressions": c.map_or(0, |c| c.expressions),
            })
        })
        .collect();
    let dir = snap.settings.log.dir.clone();
    let reloads = tokio::task::spawn_blocking(move || {
        let mut out = std::collections::VecDeque::new();
        let mut policy_loaded = None;
        if let Ok(entries) = crate::decision_log::reader::entries(&dir) {
            for (_, e) in entries {
                if let Body::Reload { what, ok, detail } = e.body {
                    if ok && what == crate::decision_log::ReloadKind::Policy {
                        policy_loaded = Some(e.time_us);
                    }
                    if out.len() == 10 {
                        out.pop_front();
                    }
                    out.push_back((e.time_us, what.as_str(), ok, detail));
                }
            }
        }
        (out, policy_loaded)
    })
    .await
    .unwrap_or_default();
    let (reloads, policy_loaded) = reloads;
    // The policy and lists in force were loaded at start or by the last good reload of
    // the policy: the log says when (the start-up gauge, if the log does not).
    let loaded = policy_loaded.map_or(loaded, |us| us.div_euclid(1_000_000));
    let age = (Utc::now().timestamp() - loaded).max(0);
    let reloads: Vec<Value> = reloads
        .iter()
        .rev()
        .map(|(us, what, ok, detail)| {
            json!({
                "time": time_text(ctx.proxy, *us), "what": what,
                "result": if *ok { "ok" } else { "REFUSED" },
                "class": if *ok { "allow" } else { "block" },
                "detail": detail,
            })
        })
        .collect();
    ctx.render(
        StatusCode::OK,
        "status.html",
        "Status",
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "loaded": DateTime::from_timestamp(loaded, 0).map(|t| t.with_timezone(&snap.policy.timezone).format("%a %d %b %Y %H:%M:%S").to_string()).unwrap_or_default(),
            "age": format!("{}h {}m {}s", age / 3600, age % 3600 / 60, age % 60),
            "domains": snap.lists.domains.len(),
            "illegal": crate::snapshot::illegal_counts(&snap),
            "grants": snap.grants.grants.len(),
            "log_health": log_health,
            "categories": categories,
            "reloads": reloads,
        }),
    )
}

async fn lessons(ctx: &Ctx<'_>) -> Reply {
    let snap = ctx.proxy.live.get();
    let who = ctx.who.clone();
    let rows = tokio::task::spawn_blocking(move || crate::grant_store::list(&snap, Utc::now()))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| r.kind == "lesson" && r.issued_by == who)
        .collect();
    ctx.render(
        StatusCode::OK,
        "lessons.html",
        "Lesson overrides",
        json!({"rows": rows}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every template compiles and renders with the shape of context its page gives it,
    /// and auto-escaping is on for what a request or the log can put there.
    #[test]
    fn every_template_renders_and_escapes() {
        let common = json!({
            "title": "T", "school": "S", "who": "<b>tech</b>", "role": "technician",
            "csrf": "c", "errors": ["<script>"], "notice": "n",
            "nav": [{"href": "/console/", "label": "Start", "about": "", "current": true}],
        });
        let form = json!({"reference": "R", "ticket": "", "reason": "", "site": "x.test",
            "scopes": [{"value": "group:ks4", "label": "Everyone in ks4", "checked": true}],
            "durations": [{"value": "hour", "label": "One hour", "selected": false}]});
        let pages = [
            ("sign_in.html", json!({"name": "n"})),
            ("message.html", json!({"message": "m"})),
            ("home.html", json!({})),
            (
                "grant_new.html",
                json!({"decision": {"reference": "R", "url": "u", "person": "p"}, "form": form}),
            ),
            (
                "lookup.html",
                json!({"typed": "R", "decision": {"reference": "R"}, "form": form}),
            ),
            (
                "grants.html",
                json!({"active": [{"id": "g-1"}], "history": [{"id": "g-0"}], "can_revoke": true}),
            ),
            (
                "alerts.html",
                json!({"days": 7, "alerts": [{"reference": "R"}], "searches": [{"terms": "t"}]}),
            ),
            (
                "person.html",
                json!({"person": "p", "rows": [{"url": "u"}]}),
            ),
            (
                "report.html",
                json!({"week": "2026-W49", "formats": [{"value": "csv", "label": "CSV"}]}),
            ),
            (
                "status.html",
                json!({"categories": [{"name": "c"}], "reloads": [{"what": "policy"}]}),
            ),
            (
                "lessons.html",
                json!({"rows": [{"id": "g-2", "classrooms": ["r1"], "groups": [], "sites": [], "categories": []}]}),
            ),
        ];
        for (name, extra) in pages {
            let mut ctx = common.clone();
            merge(&mut ctx, extra);
            let text = TEMPLATES
                .get_template(name)
                .and_then(|t| t.render(&ctx))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                text.contains("&lt;script&gt;") && !text.contains("<script>"),
                "{name}"
            );
            assert!(!text.contains("<b>tech</b>"), "{name}");
        }
    }

    #[test]
    fn roles_see_only_their_pages() {
        use Role::*;
        let table = [
            (Page::Lookup, [true, true, false, false, true]),
            (Page::Grants, [true, true, false, true, false]),
            (Page::GrantForm, [true, false, false, false, false]),
            (Page::Alerts, [false, false, false, false, true]),
            (Page::Report, [false, false, false, false, true]),
            (Page::Status, [true, false, false, true, false]),
            (Page::Lessons, [false, false, true, false, false]),
        ];
        for (page, allowed) in table {
            for (role, ok) in [Technician, Viewer, Teacher, ItLead, Dsl]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(page.permits(role), ok, "{page:?} for {role:?}");
            }
        }
    }
}
