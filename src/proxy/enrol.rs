//! The enrolment listener (`[inspection] enrol_listen`; off by default): plain HTTP that
//! a device on the school network can reach before it trusts anything, serving the
//! school CA's certificate to install as a trusted root.
//!
//! | route | answers |
//! | --- | --- |
//! | `GET /ca.crt` | the certificate, DER, `application/x-x509-ca-cert`: what Windows, iPadOS and Android open as a certificate to install |
//! | `GET /ca.pem` | the certificate, PEM, `application/x-pem-file` |
//! | `GET /` | a short page linking both, with the fingerprints to compare |
//! | `GET /proxy.pac`, `GET /wpad.dat` | the proxy auto-configuration script, when `[pac]` is set ([`super::pac`]) |
//!
//! `HEAD` works wherever `GET` does; any other path is `404` and any other method `405`.
//! The certificate comes from the snapshot (read at start and at each reload), never
//! from disk per request, and this listener never reads the CA's key. Plain HTTP is
//! deliberate: a device cannot check HTTPS against a root that it does not have yet,
//! which is why the page shows the fingerprints to compare with `gatehouse ca show`.
//!
//! It faces the pupils' network, so it is small and bounded: at most
//! [`MAX_CONNECTIONS`] at once (more are closed at once), a request head within
//! [`HEAD_TIMEOUT`] and 16 KiB, no request bodies read.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::pages::escape;
use crate::ca::CaCert;
use crate::snapshot::Live;

/// Connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 256;

/// Time for a client to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

type Reply = Response<Full<Bytes>>;

/// Serves the enrolment listener until shutdown, from the snapshot in force.
pub async fn serve(listener: TcpListener, live: Arc<Live>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a transient error: back off rather than spin.
                    tracing::warn!(error = %e, "enrolment listener: accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let live = live.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let snap = live.get();
                let reply = match &snap.settings.pac {
                    Some(pac) if super::pac::is_pac_path(req.uri().path()) => {
                        super::pac::respond(req.method(), &pac.script)
                    }
                    _ => respond(
                        req.method(),
                        req.uri().path(),
                        snap.ca.as_deref(),
                        &snap.policy.school,
                    ),
                };
                async move { Ok::<_, Infallible>(reply) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(16 * 1024);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(HEAD_TIMEOUT, conn).await;
                }
            }
        });
    }
}

/// The answer to `method path`, given the certificate in force (`None` only if none
/// was loaded, which start-up does not allow while this listener is on).
pub fn respond(method: &Method, path: &str, ca: Option<&CaCert>, school: &str) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD are served here\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if !matches!(path, "/" | "/ca.crt" | "/ca.pem") {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the school's certificate is at /ca.crt\n",
        );
    }
    let Some(ca) = ca else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "no certificate is loaded\n",
        );
    };
    let mut r = match path {
        "/ca.crt" => {
            let mut r = reply(StatusCode::OK, "application/x-x509-ca-cert", ca.der.clone());
            r.headers_mut().insert(
                CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"ca.crt\""),
            );
            r
        }
        "/ca.pem" => {
            let mut r = reply(StatusCode::OK, "application/x-pem-file", ca.pem.clone());
            r.headers_mut().insert(
                CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"ca.pem\""),
            );
            r
        }
        _ => reply(StatusCode::OK, "text/html; charset=utf-8", page(ca, school)),
    };
    // A CA replaced with `ca init --force` must not be served stale from a cache.
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The enrolment page: what the certificate is, the two downloads, and the fingerprints
/// to compare. Self-contained (no scripts, no fetches), readable on a phone.
pub fn page(ca: &CaCert, school: &str) -> String {
    let school = escape(school);
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{school}: network certificate</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #1b1b1b; }}
code {{ overflow-wrap: anywhere; font-size: 0.95em; }}
a {{ color: #0b4fa8; }}
</style>
</head>
<body>
<main>
<h1>{school}: network certificate</h1>
<p>Devices on the school network install this certificate as a trusted root, as your
IT team directs. Only install it if your school asked you to.</p>
<ul>
<li><a href="/ca.crt">Download the certificate (ca.crt)</a>, for Windows, iPad, Android and Chromebook</li>
<li><a href="/ca.pem">Download the certificate as PEM text (ca.pem)</a></li>
</ul>
<h2>Check it before you trust it</h2>
<p>Your IT team can tell you these fingerprints; they must match exactly.</p>
<dl>
<dt>Name</dt><dd><code>{subject}</code></dd>
<dt>SHA-256 fingerprint</dt><dd><code>{sha256}</code></dd>
<dt>SHA-1 fingerprint (Windows "Thumbprint")</dt><dd><code>{sha1}</code></dd>
<dt>Valid until</dt><dd>{until}</dd>
</dl>
</main>
</body>
</html>
"#,
        subject = escape(&ca.subject),
        sha256 = ca.sha256,
        sha1 = ca.sha1,
        until = ca.not_after.format("%-d %B %Y"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_ca() -> CaCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CommonName, "A <School> CA");
        params.distinguished_name = name;
        let cert = params.self_signed(&key).expect("cert");
        CaCert::parse(std::path::Path::new("ca.crt"), cert.pem().as_bytes()).expect("CA")
    }

    #[test]
    fn routes_table() {
        let ca = test_ca();
        // (method, path, status, content type)
        let rows = [
            (Method::GET, "/ca.crt", 200, "application/x-x509-ca-cert"),
            (Method::HEAD, "/ca.crt", 200, "application/x-x509-ca-cert"),
            (Method::GET, "/ca.pem", 200, "application/x-pem-file"),
            (Method::GET, "/", 200, "text/html; charset=utf-8"),
            (Method::GET, "/ca.key", 404, "text/plain; charset=utf-8"),
            (Method::GET, "/ca.crt/", 404, "text/plain; charset=utf-8"),
            (Method::GET, "/../ca.key", 404, "text/plain; charset=utf-8"),
            (Method::POST, "/ca.crt", 405, "text/plain; charset=utf-8"),
            (Method::PUT, "/", 405, "text/plain; charset=utf-8"),
        ];
        for (method, path, status, content_type) in rows {
            let r = respond(&method, path, Some(&ca), "School");
            assert_eq!(r.status().as_u16(), status, "{method} {path}");
            assert_eq!(
                r.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
                Some(content_type),
                "{method} {path}"
            );
        }
        let r = respond(&Method::POST, "/", Some(&ca), "School");
        assert_eq!(
            r.headers().get(ALLOW).and_then(|v| v.to_str().ok()),
            Some("GET, HEAD")
        );
        let r = respond(&Method::GET, "/", None, "School");
        assert_eq!(r.status().as_u16(), 503);
    }

    #[test]
    fn the_page_escapes_and_shows_the_fingerprints() {
        let ca = test_ca();
        let html = page(&ca, "St <Mary> & \"John\"");
        assert!(
            html.contains("St &lt;Mary&gt; &amp; &quot;John&quot;"),
            "{html}"
        );
        assert!(html.contains("CN=A &lt;School&gt; CA"), "{html}");
        assert!(html.contains(&ca.sha256) && html.contains(&ca.sha1));
        assert!(html.contains(r#"href="/ca.crt""#) && html.contains(r#"href="/ca.pem""#));
        assert!(html.contains(r#"<html lang="en">"#));
    }
}
