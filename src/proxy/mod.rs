//! The proxy: `gatehouse run`. Accepts connections, identifies the requester, classifies
//! and decides every request, records the verdict, then forwards it, tunnels it, or
//! answers with the block page.
//!
//! One [`Proxy`] value is shared by every connection. The policy and lists are read from
//! the [`Live`] snapshot once per request, so a reload never changes the rules under a
//! request in flight. Nothing is forwarded without a recorded verdict: sending a request
//! upstream ([`Pool::send`](pool::Pool::send)) and splicing a tunnel or an upgraded
//! connection ([`tunnel::splice`]) take an [`Allowed`](crate::decision::Allowed) permit,
//! which only [`DecisionLog::allow`](crate::decision::DecisionLog::allow) makes, once the
//! allow decision's record is with the operating system. Dialling is not gated: a
//! `CONNECT` is dialled on its first verdict, before the ClientHello's SNI is decided and
//! recorded (and dialled again when the SNI names a search engine whose safe-search
//! address the first dial did not reach), and a dial sends none of the client's bytes.
//!
//! TLS inspection (`inspect.rs`): a tunnel that [`Policy::inspect`] says is inspected
//! is not dialled; after its recorded SNI decision the client's TLS is accepted with a
//! leaf from the school CA, and every request inside takes the plain-HTTP path
//! (`request.rs`), each with its own decision, record and permit, to a TLS upstream
//! verified in full.
//!
//! [`Policy::inspect`]: crate::core::policy::Policy::inspect
//!
//! Safe search: a request or tunnel to a search engine or YouTube, for a group with the
//! engine's setting on, is dialled to the engine's safe-search address
//! ([`Policy::safe_search`](crate::core::policy::Policy::safe_search)) and its bytes pass
//! unchanged; its record says so.
//!
//! | file | one job |
//! | --- | --- |
//! | `serve.rs` | `run`: listeners, the accept loop and its connection caps, one connection's hyper service, shutdown |
//! | `request.rs` | one request: identity → classify → decide → record, for plain HTTP (CONNECT goes to `tunnel.rs`) |
//! | `forward.rs` | sending an allowed request upstream: hop-by-hop headers, `Via`, the counted bodies, the completion record |
//! | `refuse.rs` | every answer that is not the upstream's: block page and text, refusal records, upstream failures, `407`, `400`, `503` |
//! | `reload.rs` | SIGHUP and the grants file: reloads, grant audit records, expiry notes, the snapshot's gauges |
//! | `tunnel.rs` | `CONNECT`: the second decision on the TLS SNI, then the splice or the inspection |
//! | `pump.rs` | the copy inside a spliced tunnel: both ways in one task, a buffer grown for downloads |
//! | `inspect.rs` | an inspected tunnel: TLS with a minted leaf, HTTP/1.1 or HTTP/2 inside, each request through `request.rs` |
//! | `conn.rs` | the client connection's guard: head validation and time limits |
//! | `pool.rs` | keep-alive connections to origin servers |
//! | `upstream.rs` | resolving and dialling upstreams; no internal destinations |
//! | `auth.rs` | `Proxy-Authorization: Basic` against the users file |
//! | `sign_in.rs` | who a request's credentials name: the users file, else the directory, and the group they map to |
//! | `pages.rs` | the HTML and text of block, error and sign-in pages |
//! | `admin.rs` | the admin listener: metrics, health, the grants API |
//! | `enrol.rs` | the enrolment listener: the school CA's certificate for devices to install |
//! | `feeds.rs` | list feed updates (`[[lists.sources]]`): the API's and the schedule's, recorded and swapped in |
//! | `transparent.rs` | transparent mode: redirected port 80 (decided on `Host`) and 443 (on the SNI, as a `CONNECT`), the original destination |

/// `AsyncWrite` passed straight to the `inner` field: for the wrappers that only change
/// how a stream reads (tunnel.rs's byte counter, inspect.rs's replayed ClientHello).
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<S> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

pub mod admin;
pub mod auth;
pub mod conn;
pub mod console;
pub mod enrol;
mod feeds;
mod forward;
mod inspect;
pub mod pac;
pub mod pages;
pub mod pool;
mod pump;
mod refuse;
mod reload;
mod request;
mod serve;
pub mod service;
mod sign_in;
mod transparent;
pub mod tunnel;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use tokio_util::task::TaskTracker;

use crate::core::classify::Classification;
use crate::core::group::GroupId;
use crate::core::host::Target;
use crate::core::verdict::{Requester, Verdict};
use crate::decision::{Asked, DecisionLog};
use crate::snapshot::{Live, Snapshot};

use self::auth::AuthCache;
use self::pool::Pool;
use self::upstream::Dialer;

pub use self::forward::{CountUp, UpCount};
pub use self::serve::node_name;
pub use self::serve::{run, RunError};

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

/// Everything the connections share.
pub struct Proxy {
    live: Arc<Live>,
    config: PathBuf,
    /// Where verdicts go before anything is forwarded.
    pub log: DecisionLog,
    auth: AuthCache,
    /// Sign-ins against the school's directory, remembered.
    directory: crate::directory::Directory,
    /// Device names: the policy's map, reverse DNS, remembered.
    devices: crate::device::DeviceNames,
    /// Kerberos single sign-on: the proxy's acceptor credentials.
    kerberos: crate::kerberos::Kerberos,
    pool: Arc<Pool>,
    /// Metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The hand-off to the alert task (never waits).
    pub alerts: crate::alerts::AlertSender,
    tracker: TaskTracker,
    own: Arc<Vec<SocketAddr>>,
    after_load: fn(),
    /// Leaf certificates minted for inspected tunnels.
    leaves: crate::inspection::LeafCache,
    /// TLS session resumption shared by inspected tunnels.
    sessions: crate::inspection::Sessions,
    /// Held while a list feed update runs: one at a time.
    feeds_running: tokio::sync::Mutex<()>,
    /// With `[grants] store = "etcd"`: this node's copy of the grants there, and the
    /// mirror generation the grants in force were compiled from.
    grants_mirror: Option<(
        Arc<crate::etcd_grants::Mirror>,
        std::sync::atomic::AtomicU64,
    )>,
    /// The web console's sessions and sign-in failures.
    console: console::Console,
}

/// Who is asking and what they see, fixed for one request.
#[derive(Clone)]
pub struct RequestContext {
    snapshot: Arc<Snapshot>,
    client: IpAddr,
    user: Option<String>,
    /// The client's device name, where known (policy map, else reverse DNS).
    device: Option<Arc<str>>,
    group: GroupId,
    now: DateTime<Utc>,
    started: std::time::Instant,
    /// Transparent mode: where the device was connecting to (`address:port`) before
    /// the firewall redirected it here; `None` for proxied requests.
    original_destination: Option<Arc<str>>,
}

impl RequestContext {
    fn requester(&self) -> Requester<'_> {
        Requester {
            group: self.group,
            user: self.user.as_deref(),
            client: Some(self.client),
        }
    }

    /// Classifies `target` and decides it for this requester, now, on this request's
    /// snapshot: the one way the request path reaches `decide`.
    fn decide(&self, target: &Target) -> (Classification, Verdict) {
        self.decide_classified(target, self.snapshot.classify(target))
    }

    /// As [`RequestContext::decide`] for a TLS tunnel, whose path cannot be seen: a host
    /// with URL-level entries in an `illegal` category is refused whole (the IWF list is
    /// per URL; without inspection no HTTPS path of it could ever match).
    ///
    /// With the school CA there, such a host is inspected instead (see
    /// [`Policy::inspect`](crate::core::policy::Policy::inspect)), so that only its
    /// listed pages are refused: it is decided here on its host alone.
    fn decide_tunnel(&self, target: &Target) -> (Classification, Verdict) {
        let snap = &self.snapshot;
        let whole_host = if snap.inspection.is_some() {
            crate::core::category::CategorySet::EMPTY
        } else {
            snap.policy.illegal()
        };
        let classification = snap.lists.classify_tunnel(target, whole_host);
        self.decide_classified(target, classification)
    }

    fn decide_classified(
        &self,
        target: &Target,
        classification: Classification,
    ) -> (Classification, Verdict) {
        let snap = &self.snapshot;
        let verdict = snap.policy.decide(
            &self.requester(),
            target,
            &classification,
            &snap.grants.grants,
            self.now,
        );
        (classification, verdict)
    }

    /// What this request asks for, as its records name it: `method` is the request's
    /// own, `url` as recorded (absolute for plain HTTP, `host:port` for tunnels).
    fn asked<'a>(&'a self, method: &'a str, url: &'a str) -> Asked<'a> {
        Asked {
            client: self.client,
            user: self.user.as_deref(),
            group: &self.snapshot.policy.group(self.group).name,
            method,
            url,
            sni: None,
            device: self.device.as_deref(),
            original_destination: self.original_destination.as_deref(),
        }
    }
}

impl Proxy {
    /// The dialer with the snapshot's resolution and destination rules.
    fn dialer(&self, snap: &Snapshot) -> Dialer {
        Dialer::for_snapshot(snap, self.own.clone())
    }
}
