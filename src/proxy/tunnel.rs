//! HTTPS through `CONNECT`: decide on the CONNECT target, dial it, answer `200`, read
//! the TLS ClientHello (parsed by rustls's `Acceptor`, not by hand), decide again on its
//! SNI, then replay the ClientHello upstream and splice the two sockets.
//!
//! The second decision is what stops domain fronting and IP-literal tunnels: a tunnel to
//! an allowed host, or to a bare address, whose ClientHello names a blocked host is
//! closed before a byte of it reaches the upstream. Bytes that are not a ClientHello
//! (SSH, OpenVPN over TCP) close the tunnel too. Only the record of that second decision
//! makes the permit ([`Allowed`]) that [`splice`] takes.
//!
//! Encrypted ClientHello (ECH) carries the real server name encrypted, behind an outer
//! "public name" such as `cloudflare-ech.com`. A ClientHello offering ECH whose outer
//! name is not the host the tunnel was opened to, or that names none, or that goes to a
//! bare address, hides where it is going, and groups with `block_ech` (the default)
//! refuse it. One whose outer name is the CONNECT host is let through to the usual
//! checks: browsers send such an extension to servers with no ECH at all ("GREASE
//! ECH", so that real ECH does not stand out), so it says nothing about the
//! destination, and the name it shows is the one decided.
//!
//! Inspection: a tunnel that is to be inspected (the group's `inspect_tls`, or a host
//! with pages on an illegal list, when the school CA is there; never a
//! `never_inspect_*` site) is decided on the CONNECT line and the SNI as any other, but
//! not dialled or spliced: once the SNI decision is recorded, `inspect.rs` accepts the
//! client's TLS and serves the requests inside. Without the CA, a host with pages on an
//! illegal list is refused whole, as the path cannot be seen.
//!
//! Safe search needs no interception: a tunnel to a search engine or YouTube, for a group
//! with the engine's setting on, is dialled to the engine's safe-search address
//! ([`Policy::safe_search`](crate::core::policy::Policy::safe_search)) and the client's
//! bytes pass unchanged; the engine's certificate there covers the name the client asked
//! for. The name that counts is the ClientHello's: a pupil who CONNECTs to an address or
//! another host and names `www.google.com` in the SNI (fronting, to dodge the rewrite)
//! has the tunnel dialled again, to the safe-search address, before the ClientHello is
//! replayed. Redialling rather than refusing: the SNI is what the engine serves, so the
//! tunnel then reaches the same safe server as an honest client would, and a client
//! that fronts for another reason (an app pinned to an address) keeps working.
//!
//! Transparent mode (`transparent.rs`) shares this path: its redirected TLS connection
//! is read with `read_hello`, decided first on the SNI's name as a `CONNECT` line
//! naming it would be, dialled by `first_dial`, and then goes through
//! `after_hello` like any tunnel, except that a refusal ends the handshake with a
//! TLS alert (`OnRefusal::Alert`) rather than a bare close.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::upstream::UpstreamError;
use super::{Body, Proxy, RequestContext};
use crate::core::classify::Classification;
use crate::core::host::{Host, Target};
use crate::core::safe_search::SafeSearchRewrite;
use crate::core::verdict::{Action, Reason, ReasonCode, Verdict};
use crate::decision::{Allowed, Asked, NoPermit};
use crate::decision_log::{Decision, StoredAction};

/// Largest ClientHello we wait for (post-quantum key shares make them a few KiB).
const MAX_HELLO: usize = 64 * 1024;

/// What the start of a tunnel turned out to be.
enum Hello {
    /// A ClientHello: its SNI if it had one, and whether it offers Encrypted ClientHello.
    Tls { sni: Option<String>, ech: bool },
    /// Not TLS.
    NotTls,
    /// The client went away or took too long.
    Gone,
}

async fn read_client_hello<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
    wait: Duration,
) -> Hello {
    let mut acceptor = rustls::server::Acceptor::default();
    let deadline = Instant::now() + wait;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Hello::Gone,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut fresh: &[u8] = &chunk[..n];
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh).is_err() {
                return Hello::NotTls;
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                return Hello::Tls {
                    sni: accepted.client_hello().server_name().map(str::to_string),
                    ech: offers_ech(buf),
                }
            }
            Ok(None) if buf.len() < MAX_HELLO => continue,
            Ok(None) | Err(_) => return Hello::NotTls,
        }
    }
}

/// `encrypted_client_hello` and the earlier draft's `encrypted_server_name` (ESNI).
const ECH_EXTENSIONS: [u16; 2] = [0xfe0d, 0xffce];

/// Whether the ClientHello in `records` (which rustls has accepted) offers Encrypted
/// ClientHello, or cannot be read to tell. rustls does not expose a hello's extensions, so tls-parser reads them:
/// the handshake records' fragments are joined (a hello may span records), the hello
/// parsed, and its extensions listed by type without interpreting their contents.
fn offers_ech(records: &[u8]) -> bool {
    let mut handshake = Vec::new();
    let mut rest = records;
    while let Ok((after, record)) = tls_parser::parse_tls_raw_record(rest) {
        if record.hdr.record_type != tls_parser::TlsRecordType::Handshake {
            break;
        }
        handshake.extend_from_slice(record.data);
        rest = after;
    }
    let Ok((
        _,
        tls_parser::TlsMessage::Handshake(tls_parser::TlsMessageHandshake::ClientHello(hello)),
    )) = tls_parser::parse_tls_message_handshake(&handshake)
    else {
        // rustls accepted it but tls-parser cannot read it: two parsers that disagree are
        // a way round a filter, so it counts as hiding its name (refused only where the
        // name it shows is not the CONNECT host, as for ECH).
        return true;
    };
    let mut extensions = hello.ext.unwrap_or_default();
    while let Ok((after, ext)) = tls_parser::parse_tls_extension_unknown(extensions) {
        if let tls_parser::TlsExtension::Unknown(kind, _) = ext {
            if ECH_EXTENSIONS.contains(&kind.0) {
                return true;
            }
        }
        extensions = after;
    }
    false
}

/// Copies both ways until both sides finish, the tunnel has been idle for `idle`, or it
/// has lived for `lifetime`. Returns bytes (client → upstream, upstream → client).
/// Spends a permit: the recorded decision that allowed the tunnel (or the upgrade).
///
/// The copy is `pump::both_ways`: both directions in one task, each with its own buffer
/// (small, grown for a download), so a bulk download reads the next chunk while the last
/// is written, and no lock sits between a socket's halves. Activity is two counters
/// bumped as bytes are read; a watcher looks at them every quarter of `idle` rather than
/// re-arming a timer for every chunk, so a tunnel idle for `idle` closes within `idle`
/// and a quarter. (A timer per chunk, and a split lock per read and write, held a spliced
/// download to about half of direct TLS in `benches/connect.sh`.)
pub async fn splice<A, B>(
    _permit: Allowed,
    a: A,
    b: B,
    idle: Duration,
    lifetime: Duration,
) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut a = Counted {
        inner: a,
        read: sent.clone(),
    };
    let mut b = Counted {
        inner: b,
        read: received.clone(),
    };
    let total = || sent.load(Ordering::Relaxed) + received.load(Ordering::Relaxed);
    let watch = async {
        let step = (idle / 4).max(Duration::from_millis(1));
        let (mut seen, mut quiet) = (total(), Duration::ZERO);
        loop {
            tokio::time::sleep(step).await;
            let now = total();
            if now == seen {
                quiet += step;
                if quiet >= idle {
                    return;
                }
            } else {
                (seen, quiet) = (now, Duration::ZERO);
            }
        }
    };
    tokio::select! {
        _ = super::pump::both_ways(&mut a, &mut b) => {}
        _ = watch => {}
        _ = tokio::time::sleep(lifetime) => {}
    }
    (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    )
}

/// A stream that counts the bytes read from it.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

write_through!(Counted);

/// Handles one `CONNECT`.
pub async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
    ctx: RequestContext,
) -> Response<Body> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let target = match Target::from_authority(&authority) {
        Ok(t) => t,
        Err(e) => {
            let why = format!("CONNECT target {authority:?}: {e}");
            return proxy
                .refuse_unreadable(&ctx, "CONNECT", &authority, &why)
                .await;
        }
    };
    let snap = ctx.snapshot.clone();
    let settings = &snap.settings.server;
    let url = format!("{}:{}", target.host, target.port);
    let asked = ctx.asked("CONNECT", &url);

    if !settings.tunnel_ports.contains(&target.port) {
        let explanation = format!(
            "tunnels may only reach ports {:?}; port {} is not allowed",
            settings.tunnel_ports, target.port
        );
        return proxy
            .refuse(
                &ctx,
                &asked,
                None,
                Vec::new(),
                ReasonCode::Port,
                None,
                explanation,
                true,
            )
            .await;
    }

    let (classification, verdict) = ctx.decide_tunnel(&target);
    if verdict.action == Action::Block {
        let note = whole_host_note(&target, &classification, &verdict);
        return proxy
            .refuse_verdict(
                &ctx,
                &asked,
                note.as_deref(),
                &verdict,
                &classification,
                true,
            )
            .await;
    }

    let (upstream, safe_search) = match first_dial(&proxy, &ctx, &target, &classification).await {
        Ok(dialled) => dialled,
        Err(e) => return proxy.upstream_failure(&ctx, &asked, &e, true).await,
    };

    let on_upgrade = hyper::upgrade::on(req);
    let tracker = proxy.tracker.clone();
    tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        let url = format!("{}:{}", target.host, target.port);
        let asked = ctx.asked("CONNECT", &url);
        let Some(hello) = read_hello(&proxy, &ctx, &asked, &mut client).await else {
            return;
        };
        let tunnel = Tunnel {
            ctx,
            target,
            verdict,
            client,
            upstream,
            safe_search,
            on_refusal: OnRefusal::Close,
        };
        after_hello(proxy, tunnel, hello).await;
    });
    let mut resp = Response::new(super::empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// The first dial of a tunnel allowed on its target (a `CONNECT`'s host, or transparent
/// mode's SNI): to the engine's safe-search address for a search engine or YouTube, for
/// a group with its setting on (the ClientHello may still move it: see
/// [`after_hello`]); not at all for a tunnel that will be inspected, as each request
/// inside dials its own TLS connection (pooled). Returns the upstream, if dialled, and
/// the safe-search rewrite it went to.
pub(super) async fn first_dial(
    proxy: &Proxy,
    ctx: &RequestContext,
    target: &Target,
    classification: &Classification,
) -> Result<(Option<TcpStream>, Option<SafeSearchRewrite>), UpstreamError> {
    let snap = &ctx.snapshot;
    let safe_search = snap.policy.safe_search(ctx.group, &target.host);
    let inspected = snap
        .policy
        .inspect(
            ctx.group,
            target,
            classification,
            &snap.lists,
            snap.inspection.is_some(),
        )
        .inspected();
    if inspected {
        return Ok((None, safe_search));
    }
    let dial = match &safe_search {
        Some(rewrite) => rewrite.dialled.clone(),
        None => target.host.to_string(),
    };
    let upstream = proxy.dialer(snap).connect(&dial, target.port).await?;
    Ok((Some(upstream), safe_search))
}

/// The ClientHello that starts a tunnel: its bytes (held back from the upstream until
/// its decision is recorded), its SNI, and whether it offers Encrypted ClientHello.
pub(super) struct ClientHello {
    bytes: Vec<u8>,
    /// The server name it asks for, if any.
    pub(super) sni: Option<String>,
    ech: bool,
}

impl ClientHello {
    /// Its bytes, for a TLS server to read again (inspection).
    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads the ClientHello that starts a tunnel. Bytes that are not one are refused and
/// recorded as such (`asked` names the tunnel); `None` when the tunnel is over.
pub(super) async fn read_hello<C: AsyncRead + Unpin>(
    proxy: &Proxy,
    ctx: &RequestContext,
    asked: &Asked<'_>,
    client: &mut C,
) -> Option<ClientHello> {
    let mut bytes = Vec::new();
    let wait = ctx.snapshot.settings.server.client_hello_timeout;
    match read_client_hello(client, &mut bytes, wait).await {
        Hello::Gone => None,
        Hello::NotTls => {
            let _ = proxy
                .record_refusal(ctx, asked, Vec::new(), ReasonCode::NotTls, "the tunnel did not start with a TLS ClientHello (VPN or other protocol refused)", 403)
                .await;
            None
        }
        Hello::Tls { sni, ech } => Some(ClientHello { bytes, sni, ech }),
    }
}

/// How a tunnel refused after its ClientHello ends for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnRefusal {
    /// The connection is closed (a `CONNECT`: the browser already knows it asked a
    /// proxy, and existing clients expect the close).
    Close,
    /// A fatal TLS alert (`access_denied`) ends the handshake, then the close: transparent
    /// mode, where the device believes it is talking to the server, so that it fails at
    /// once with a TLS error rather than waiting or retrying.
    Alert,
}

/// A fatal `access_denied` alert, as a TLS record (content type 21, version 3.3,
/// length 2, level fatal, description 49).
const ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49];

/// Ends a refused tunnel as `how` says.
pub(super) async fn end_refused<C: AsyncWrite + Unpin>(client: &mut C, how: OnRefusal) {
    if how == OnRefusal::Alert {
        let _ = client.write_all(&ACCESS_DENIED).await;
        let _ = client.shutdown().await;
    }
}

/// A tunnel allowed on its first decision, whose ClientHello is read but not yet
/// decided.
pub(super) struct Tunnel<C> {
    pub(super) ctx: RequestContext,
    /// What the tunnel was first decided on: the `CONNECT` target, or in transparent
    /// mode the SNI's name (else the original destination) and the redirected port.
    pub(super) target: Target,
    /// That first decision.
    pub(super) verdict: Verdict,
    pub(super) client: C,
    /// The first dial's upstream (none for a tunnel that was to be inspected).
    pub(super) upstream: Option<TcpStream>,
    /// The safe-search rewrite the first dial went to.
    pub(super) safe_search: Option<SafeSearchRewrite>,
    pub(super) on_refusal: OnRefusal,
}

/// The tunnel's second decision, on its ClientHello's SNI (and ECH), shared by
/// `CONNECT` and transparent mode; then, allowed and recorded, the inspection or the
/// splice.
pub(super) async fn after_hello<C: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    proxy: Arc<Proxy>,
    tunnel: Tunnel<C>,
    hello: ClientHello,
) {
    let Tunnel {
        ctx,
        target,
        verdict: connect_verdict,
        mut client,
        mut upstream,
        mut safe_search,
        on_refusal,
    } = tunnel;
    let ClientHello {
        bytes: hello,
        sni,
        ech,
    } = hello;
    let snap = ctx.snapshot.clone();
    let policy = &snap.policy;
    let settings = &snap.settings.server;
    let group = policy.group(ctx.group);
    let url = format!("{}:{}", target.host, target.port);
    let asked = ctx.asked("CONNECT", &url);
    // The SNI as a host, parsed once for the ECH check and for its own decision.
    let sni_host = sni.as_deref().map(|name| (name, Host::parse(name)));
    // Only an outer name that is the CONNECT host's own says where an ECH tunnel goes;
    // none, an invalid one, another one, or any behind a bare address hides it.
    let shows_target =
        !target.host.is_ip() && matches!(&sni_host, Some((_, Ok(h))) if *h == target.host);
    if ech && !shows_target && group.block_ech {
        let shown = sni.as_deref().unwrap_or("no name");
        let _ = proxy
            .record_refusal(
                &ctx,
                &Asked {
                    sni: sni.as_deref(),
                    ..asked
                },
                Vec::new(),
                ReasonCode::Ech,
                &format!(
                    "the ClientHello hides the server it wants (Encrypted ClientHello, showing {shown}); group {} may not use hidden server names",
                    group.name
                ),
                403,
            )
            .await;
        return end_refused(&mut client, on_refusal).await;
    }
    let mut verdict = connect_verdict;
    let mut sni_safe_search = None;
    // What the inspection is decided on: the SNI's host and classification, else the
    // CONNECT target's.
    let mut inspect_on: Option<(Target, Classification)> = None;
    let mut classification_terms = Vec::new();
    let mut categories = policy
        .category_names(verdict.categories)
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    match sni_host {
        None if group.require_sni => {
            let _ = proxy
                .record_refusal(
                    &ctx,
                    &asked,
                    categories,
                    ReasonCode::NoSni,
                    &format!(
                        "group {} requires TLS tunnels to name their server (SNI)",
                        group.name
                    ),
                    403,
                )
                .await;
            return end_refused(&mut client, on_refusal).await;
        }
        None => {}
        Some((name, Err(_))) => {
            let _ = proxy
                .record_refusal(
                    &ctx,
                    &Asked {
                        sni: Some(name),
                        ..asked
                    },
                    categories,
                    ReasonCode::BadSni,
                    &format!("the ClientHello names an invalid server {name:?}"),
                    403,
                )
                .await;
            return end_refused(&mut client, on_refusal).await;
        }
        Some((name, Ok(host))) => {
            let sni_target = Target {
                host,
                ..target.clone()
            };
            let (c, v) = ctx.decide_tunnel(&sni_target);
            categories = policy
                .category_names(v.categories.union(verdict.categories))
                .iter()
                .map(|s| s.to_string())
                .collect();
            classification_terms = c.terms.iter().map(|m| m.term.clone()).collect();
            if v.action == Action::Block {
                let mut explanation = policy.explain(&v);
                if let Some(note) = whole_host_note(&sni_target, &c, &v) {
                    explanation.push_str("; ");
                    explanation.push_str(&note);
                }
                if sni_target.host != target.host {
                    explanation = format!(
                        "the ClientHello names {}, not {}: {explanation}",
                        sni_target.host, target.host
                    );
                }
                let _ = proxy
                    .record_block(
                        &ctx,
                        &Asked {
                            sni: Some(name),
                            ..asked
                        },
                        categories,
                        v.reason.code(),
                        v.grant.as_ref().map(|g| g.ticket.to_string()),
                        &explanation,
                        403,
                    )
                    .await;
                return end_refused(&mut client, on_refusal).await;
            }
            sni_safe_search = policy.safe_search(ctx.group, &sni_target.host);
            verdict = v;
            inspect_on = Some((sni_target, c));
        }
    }
    let (inspect_target, inspect_classification) =
        inspect_on.unwrap_or_else(|| (target.clone(), snap.classify(&target)));
    let inspection = policy.inspect(
        ctx.group,
        &inspect_target,
        &inspect_classification,
        &snap.lists,
        snap.inspection.is_some(),
    );
    if inspection.inspected() {
        let why = match inspection {
            crate::core::inspect::Inspection::IllegalPages(_) => "illegal_pages",
            _ => "group",
        };
        let record = Decision::new(
            &Asked {
                sni: sni.as_deref(),
                ..asked
            },
            StoredAction::Allow,
            verdict.reason.code(),
            categories,
            verdict.grant.as_ref().map(|g| g.ticket.to_string()),
            200,
            classification_terms,
        )
        .with_enforced(vec![format!("tls-inspected: {why}")]);
        let explanation = format!("{}; {inspection}", policy.explain(&verdict));
        let permit = match proxy.log_allow(&ctx, &verdict, record, &explanation).await {
            Ok(permit) => permit,
            Err(NoPermit::Unlogged(unlogged)) if !group.fail_closed => unlogged.allow_unrecorded(),
            Err(_) => return end_refused(&mut client, on_refusal).await,
        };
        proxy
            .metrics
            .inspected_tunnels
            .with_label_values(&[why])
            .inc();
        proxy
            .clone()
            .serve_inspected(ctx.clone(), inspect_target, hello, client, permit)
            .await;
        return;
    }
    // The ClientHello names a search engine (or YouTube) that the first dial did not
    // reach the safe-search address of: fronting, or one engine's name behind another's.
    // Dial the address its SNI maps to before a byte of the hello goes upstream.
    if let Some(rewrite) = sni_safe_search {
        // Not dialled yet (the CONNECT host was to be inspected): the dial below goes
        // to the rewrite's address.
        let redial = upstream.is_some()
            && match &safe_search {
                Some(first) => first.dialled != rewrite.dialled,
                None => target.host.text() != rewrite.dialled.as_str(),
            };
        if redial {
            match proxy
                .dialer(&snap)
                .connect(&rewrite.dialled, target.port)
                .await
            {
                Ok(redialled) => upstream = Some(redialled),
                Err(e) => {
                    let asked = Asked {
                        sni: sni.as_deref(),
                        ..asked
                    };
                    // The tunnel is already open: the answer goes nowhere, the failure
                    // is counted (and recorded when it is an internal address).
                    let _ = proxy.upstream_failure(&ctx, &asked, &e, true).await;
                    return;
                }
            }
        }
        safe_search = Some(rewrite);
    }
    let mut upstream = match upstream {
        Some(u) => u,
        None => {
            let dial = match &safe_search {
                Some(rewrite) => rewrite.dialled.clone(),
                None => target.host.to_string(),
            };
            match proxy.dialer(&snap).connect(&dial, target.port).await {
                Ok(u) => u,
                Err(e) => {
                    let asked = Asked {
                        sni: sni.as_deref(),
                        ..asked
                    };
                    let _ = proxy.upstream_failure(&ctx, &asked, &e, true).await;
                    return;
                }
            }
        }
    };
    let explanation: String = policy.explain(&verdict);
    let record = Decision::new(
        &Asked {
            sni: sni.as_deref(),
            ..asked
        },
        StoredAction::Allow,
        verdict.reason.code(),
        categories,
        verdict.grant.as_ref().map(|g| g.ticket.to_string()),
        200,
        classification_terms,
    )
    .with_safe_search(safe_search.clone());
    let permit = match proxy.log_allow(&ctx, &verdict, record, &explanation).await {
        Ok(permit) => permit,
        // As for plain HTTP: a group that fails open goes ahead unrecorded.
        Err(NoPermit::Unlogged(unlogged)) if !group.fail_closed => unlogged.allow_unrecorded(),
        Err(_) => return end_refused(&mut client, on_refusal).await,
    };
    proxy.count_safe_search(safe_search.as_ref());
    // The ClientHello was held back until now: no byte of the client's reaches the
    // upstream before the decision on its SNI is recorded.
    if upstream.write_all(&hello).await.is_err() {
        return;
    }
    let reference = permit.reference();
    let started = std::time::Instant::now();
    let _tunnel = crate::metrics::GaugeGuard::open(&proxy.metrics.tunnels);
    let (up, down) = splice(
        permit,
        &mut client,
        upstream,
        settings.tunnel_idle_timeout,
        settings.tunnel_max_lifetime,
    )
    .await;
    proxy.log.completed(
        reference,
        200,
        up + hello.len() as u64,
        down,
        started.elapsed(),
    );
}

/// Why a whole site was refused when only some of its addresses are on an `illegal`
/// list: over HTTPS the path is hidden, so the host is refused as a whole.
pub(super) fn whole_host_note(
    target: &Target,
    classification: &Classification,
    verdict: &Verdict,
) -> Option<String> {
    match verdict.reason {
        Reason::Illegal { category } if classification.whole_host.contains(category) => {
            Some(format!(
                "{} has pages on that list; the path of an HTTPS request cannot be seen, so the whole site is refused",
                target.host
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::offers_ech;

    #[test]
    fn a_hello_that_cannot_be_read_counts_as_hiding_its_name() {
        for records in [
            &b""[..],
            b"\x16\x03\x01\x00\x04\x01\x00\x00\x00",
            b"\x17\x03\x03\x00\x01x",
        ] {
            assert!(offers_ech(records), "{records:?}");
        }
    }
}
