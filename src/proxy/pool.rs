//! Keep-alive connections to origin servers, reused across requests and clients.
//!
//! One idle list per origin, newest first: `host:port` as normalised, or, for a request
//! dialled to a safe-search address instead of its host, `host:port via address`, so that
//! a connection dialled to one name is never lent to a request for another. A connection goes
//! back on its list only when the response it carried ended cleanly; one whose client
//! went away mid-body, that was upgraded (`101`) or that said `Connection: close` is
//! dropped and closes. Idle connections are kept at most [`PoolSettings::idle_timeout`]
//! and at most [`PoolSettings::max_idle_per_origin`] per origin; a reaper task closes
//! the expired ones.
//!
//! A request that finds a pooled connection already closed by the origin (the race
//! every keep-alive client has) is sent again on a fresh connection — only when hyper
//! hands the request back unsent, so nothing is ever sent twice.
//!
//! This replaces hyper-util's general-purpose client: that one spawns a task per
//! request to wait for the connection to become reusable and hashes its pool key with
//! SipHash twice per request; callgrind put its share of an allowed request at about an
//! eighth.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::upstream::{Dialer, UpstreamError};
use super::CountUp;
use crate::decision::Allowed;

type Map<V> = hashbrown::HashMap<Arc<str>, V, rustc_hash::FxBuildHasher>;

/// Pool limits.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// Idle connections kept per origin.
    pub max_idle_per_origin: usize,
}

struct Idle {
    sender: SendRequest<CountUp>,
    since: Instant,
}

/// The shared pool.
pub struct Pool {
    settings: PoolSettings,
    idle: Mutex<Map<Vec<Idle>>>,
}

/// A connection lent to one request; give it back with [`Pool::put`] when its response
/// has ended cleanly.
pub struct Lease {
    origin: Arc<str>,
    sender: SendRequest<CountUp>,
}

impl Pool {
    /// An empty pool; starts its reaper on the current runtime.
    pub fn new(settings: PoolSettings) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            settings,
            idle: Mutex::new(Map::default()),
        });
        let weak = Arc::downgrade(&pool);
        let every = (settings.idle_timeout / 3).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                pool.reap();
            }
        });
        pool
    }

    fn reap(&self) {
        let now = Instant::now();
        let keep = self.settings.idle_timeout;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, list| {
            list.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < keep);
            !list.is_empty()
        });
    }

    /// Takes the newest idle connection to `origin` that is still open and fresh.
    fn take(&self, origin: &str) -> Option<Lease> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let (key, list) = idle.get_key_value_mut(origin)?;
        let key = key.clone();
        while let Some(c) = list.pop() {
            if !c.sender.is_closed() && now.duration_since(c.since) < self.settings.idle_timeout {
                return Some(Lease {
                    origin: key,
                    sender: c.sender,
                });
            }
        }
        None
    }

    /// Gives a connection back after its response ended cleanly.
    pub fn put(&self, lease: Lease) {
        if lease.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(lease.origin).or_default();
        if list.len() >= self.settings.max_idle_per_origin {
            // The oldest goes; it is the likeliest to have been closed by the origin.
            list.remove(0);
        }
        list.push(Idle {
            sender: lease.sender,
            since: Instant::now(),
        });
    }

    /// Opens a new connection to `host` and `port` with the dialer's rules, over TLS
    /// when `tls` says so.
    async fn open(
        &self,
        dialer: Dialer,
        origin: &str,
        host: &str,
        port: u16,
        tls: Option<&UpstreamTls>,
    ) -> Result<Lease, UpstreamError> {
        let stream = dialer.connect(host, port).await?;
        let sender = match tls {
            None => handshake(TokioIo::new(stream), host).await?,
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let stream = connector
                    .connect(tls.name.clone(), stream)
                    .await
                    .map_err(|e| tls_failure(&tls.name, e))?;
                handshake(TokioIo::new(stream), host).await?
            }
        };
        Ok(Lease {
            origin: Arc::from(origin),
            sender,
        })
    }

    /// Sends `req` to `origin` (the pool key: the authority, and the name dialled when
    /// that is another), on a pooled connection when one is free, else on a new one to
    /// `host` and `port`, dialled with `dialer()`'s rules.
    /// Only with a permit: the recorded decision that allowed the request.
    /// On success the lease travels with the response so that the connection can be
    /// given back when both bodies have ended.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        _permit: &Allowed,
        dialer: impl FnOnce() -> Dialer,
        origin: &str,
        host: &str,
        port: u16,
        tls: Option<&UpstreamTls>,
        mut req: Request<CountUp>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        // Pooled connections first; each one that turns out to be closed hands the
        // request back unsent, and the next is tried; then a fresh one.
        while let Some(mut lease) = self.take(origin) {
            if poll_fn(|cx| lease.sender.poll_ready(cx)).await.is_err() {
                continue;
            }
            match lease.sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, lease)),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(refused(host, e.error())),
                },
            }
        }
        let mut lease = self.open(dialer(), origin, host, port, tls).await?;
        poll_fn(|cx| lease.sender.poll_ready(cx))
            .await
            .map_err(|e| refused(host, &e))?;
        match lease.sender.send_request(req).await {
            Ok(resp) => Ok((resp, lease)),
            Err(e) => Err(refused(host, &e)),
        }
    }
}

/// TLS towards an upstream (an inspected tunnel's): the settings, with full
/// verification, and the name its certificate must carry (the host asked for, also when
/// a safe-search address is dialled instead).
pub struct UpstreamTls {
    /// Client settings.
    pub config: Arc<rustls::ClientConfig>,
    /// The name verified.
    pub name: rustls::pki_types::ServerName<'static>,
}

async fn handshake<T>(io: T, host: &str) -> Result<SendRequest<CountUp>, UpstreamError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| refused(host, &e))?;
    tokio::spawn(async move {
        // Errors here reach the request as the response future's error.
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// A failed TLS handshake: a certificate that did not verify is
/// [`UpstreamError::Certificate`], anything else a refusal.
fn tls_failure(name: &rustls::pki_types::ServerName<'_>, e: std::io::Error) -> UpstreamError {
    let host = name.to_str().into_owned();
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(why) => Some(certificate_words(why)),
            _ => None,
        });
    match certificate {
        Some(detail) => UpstreamError::Certificate { host, detail },
        None => UpstreamError::Refused {
            host,
            detail: format!("TLS handshake failed: {e}"),
        },
    }
}

/// What is wrong with a certificate, in words a technician can act on.
fn certificate_words(why: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match why {
        E::UnknownIssuer => "its certificate is not signed by an authority this proxy trusts (self-signed, or a private CA missing from [inspection] extra_roots)".into(),
        E::Expired | E::ExpiredContext { .. } => "its certificate has expired".into(),
        E::NotValidYet | E::NotValidYetContext { .. } => "its certificate is not valid yet".into(),
        E::NotValidForName | E::NotValidForNameContext { .. } => "its certificate is for another name".into(),
        E::Revoked => "its certificate has been revoked".into(),
        E::BadSignature => "its certificate's signature is not valid".into(),
        other => format!("its certificate is not valid ({other:?})"),
    }
}

fn refused(host: &str, e: &hyper::Error) -> UpstreamError {
    UpstreamError::Refused {
        host: host.to_string(),
        detail: super::upstream::error_chain(e),
    }
}
