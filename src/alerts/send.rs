//! Delivering one alert on one channel: SMTP with lettre (STARTTLS or TLS over rustls;
//! plain only when the policy says `tls = "none"`), and a JSON webhook over hyper,
//! signed with HMAC-SHA256.
//!
//! # The webhook
//!
//! `POST` with `Content-Type: application/json`; the body is
//! `{"id": …, "timestamp": <Unix seconds>, "type": "alert"|"digest", "alert"|"digest": {…}}`.
//! Headers: `X-Gatehouse-Timestamp` (the same seconds), `X-Gatehouse-Delivery` (the
//! outbox id: a retry repeats it, so a receiver can drop duplicates) and
//! `X-Gatehouse-Signature: sha256=<hex>`, the HMAC-SHA256 of the raw body under the
//! shared secret. A receiver checks the signature, then refuses a timestamp more than
//! five minutes old (a replay).

use std::time::Duration;

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use lettre::AsyncTransport;
use sha2::Sha256;

use super::outbox::Payload;
use super::settings::{EmailSettings, Secret, SmtpTls, WebhookSettings};

/// Why a send failed (the alert stays in the outbox and is retried).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A secret, password or CA file could not be read.
    #[error("cannot read {path}: {source}")]
    Secret {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The SMTP exchange failed.
    #[error("smtp: {0}")]
    Smtp(String),
    /// The webhook could not be reached or did not answer 2xx.
    #[error("webhook: {0}")]
    Webhook(String),
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn read_secret(path: &std::path::Path) -> Result<String, SendError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|source| SendError::Secret {
            path: path.to_path_buf(),
            source,
        })
}

/// The subject and text of a payload.
pub fn words(payload: &Payload) -> (String, String) {
    match payload {
        Payload::Alert(a) => (a.subject(), a.text()),
        Payload::Digest(d) => (d.subject(), d.text()),
    }
}

/// Sends `payload` by email.
pub async fn email(settings: &EmailSettings, payload: &Payload) -> Result<(), SendError> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, Message, Tokio1Executor};
    let (subject, text) = words(payload);
    let mut message = Message::builder()
        .from(settings.from.clone())
        .subject(subject)
        .header(lettre::message::header::ContentType::TEXT_PLAIN);
    for to in &settings.to {
        message = message.to(to.clone());
    }
    let message = message
        .body(text)
        .map_err(|e| SendError::Smtp(e.to_string()))?;
    let smtp = |e: lettre::transport::smtp::Error| SendError::Smtp(e.to_string());
    let parameters = || -> Result<TlsParameters, SendError> {
        let mut builder = TlsParameters::builder(settings.server.clone());
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|source| SendError::Secret {
                path: path.clone(),
                source,
            })?;
            let ca = lettre::transport::smtp::client::Certificate::from_pem(&pem).map_err(smtp)?;
            builder = builder.add_root_certificate(ca);
        }
        builder.build().map_err(smtp)
    };
    let tls = match settings.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::StartTls => Tls::Required(parameters()?),
        SmtpTls::Tls => Tls::Wrapper(parameters()?),
    };
    let mut builder =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.server.as_str())
            .port(settings.port)
            .tls(tls)
            .timeout(Some(TIMEOUT));
    if let Some(user) = &settings.username {
        let password = match &settings.password_file {
            Some(p) => read_secret(p)?,
            None => String::new(),
        };
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    builder.build().send(message).await.map_err(smtp)?;
    Ok(())
}

/// The webhook's body for `payload`, sent at `timestamp`.
pub fn webhook_body(id: u64, timestamp: i64, payload: &Payload) -> Vec<u8> {
    let value = match payload {
        Payload::Alert(a) => serde_json::json!({
            "id": id, "timestamp": timestamp, "type": "alert", "alert": a,
        }),
        Payload::Digest(d) => serde_json::json!({
            "id": id, "timestamp": timestamp, "type": "digest", "digest": d,
        }),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts `payload` to the webhook.
pub async fn webhook(
    settings: &WebhookSettings,
    id: u64,
    timestamp: i64,
    payload: &Payload,
) -> Result<(), SendError> {
    let secret = match &settings.secret {
        Secret::File(p) => read_secret(p)?,
        Secret::Inline(s) => s.clone(),
    };
    let body = webhook_body(id, timestamp, payload);
    let sig = signature(secret.as_bytes(), &body);
    let url = &settings.url;
    let fail = |e: &dyn std::fmt::Display| SendError::Webhook(e.to_string());
    let host = url.host().ok_or_else(|| fail(&"no host"))?.to_string();
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| host.clone());
    let request = http::Request::post(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-gatehouse-timestamp", timestamp.to_string())
        .header("x-gatehouse-delivery", id.to_string())
        .header("x-gatehouse-signature", sig)
        .header(
            http::header::USER_AGENT,
            concat!("gatehouse/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| fail(&e))?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| fail(&e))?;
        let status = if https {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = &settings.ca_file {
                use rustls::pki_types::pem::PemObject;
                let pem = std::fs::read(path).map_err(|source| SendError::Secret {
                    path: path.clone(),
                    source,
                })?;
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                    roots
                        .add(cert.map_err(|e| fail(&e))?)
                        .map_err(|e| fail(&e))?;
                }
            }
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| fail(&e))?;
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| fail(&e))?;
            post(tls, request).await?
        } else {
            post(tcp, request).await?
        };
        if status.is_success() {
            Ok(())
        } else {
            Err(fail(&format!("answered {status}")))
        }
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| fail(&"timed out"))?
}

async fn post<S>(
    io: S,
    request: http::Request<Full<bytes::Bytes>>,
) -> Result<http::StatusCode, SendError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let fail = |e: hyper::Error| SendError::Webhook(e.to_string());
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(fail)?;
    tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(fail)?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
