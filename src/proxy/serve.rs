//! Serving: `gatehouse run` opens the listeners and the decision log, then accepts
//! connections under two caps (one global, derived from the file-descriptor limit, and
//! one per client address), each refused at once with a `503` rather than queued. Every
//! connection is served by hyper behind its guard (`conn.rs`) until it ends or shutdown
//! asks it to finish. SIGTERM or SIGINT starts the shutdown: no new connections, and a
//! grace period for those in flight.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hyper::service::service_fn;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::AuthCache;
use super::conn::{ConnLimits, GuardedIo};
use super::pool::{Pool, PoolSettings};
use super::reload::{load_then, watch_grants};
use super::transparent::{original_destination, Listener};
use super::{admin, enrol, Proxy};
use crate::core::identity::canonical_ip;
use crate::decision::DecisionLog;
use crate::decision_log::writer::LogSettings;
use crate::metrics::GaugeGuard;
use crate::snapshot::Live;

/// Why `gatehouse run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The policy did not load.
    #[error("{0}")]
    Policy(#[from] crate::core::config::ConfigErrors),
    /// The listener could not be opened.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The decision log could not be opened.
    #[error("decision log: {0}")]
    Log(#[from] crate::decision_log::writer::OpenError),
    /// The alert outbox could not be opened.
    #[error("{0}")]
    Alerts(#[from] crate::alerts::outbox::OutboxError),
    /// The runtime or a signal handler failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The admin listener's TLS certificate or key could not be used.
    #[error("{0}")]
    AdminTls(#[from] super::admin::AdminTlsError),
}

/// The connection caps: a global limit derived from the file-descriptor limit, and one
/// per client address, both refusing excess connections at once.
struct Caps {
    global: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    per_client_max: usize,
}

struct ClientSlot<'a> {
    caps: &'a Caps,
    ip: IpAddr,
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.caps.per_client.lock() {
            if let Some(n) = map.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
    }
}

impl Caps {
    fn take(&self, ip: IpAddr) -> Option<ClientSlot<'_>> {
        let mut map = self.per_client.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= self.per_client_max {
            return None;
        }
        *n += 1;
        Some(ClientSlot { caps: self, ip })
    }
}

/// The file-descriptor limit, raised to the hard limit, and the connection cap it allows:
/// each proxied connection may hold two descriptors (client and upstream), and some are
/// kept back for lists, logs and the admin listener.
fn connection_cap(configured: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let derived = (limit.saturating_sub(64) / 2).max(16) as usize;
    if configured == 0 {
        derived
    } else {
        configured.min(derived)
    }
}

/// How often a node asks etcd whether it is there, besides watching it: a member
/// gone silent (a partition) does not end a watch by itself.
const STORE_PROBE: Duration = Duration::from_secs(2);

/// Runs the proxy until SIGTERM or SIGINT. Returns when in-flight work has finished or
/// the grace period has passed.
///
/// `after_load` runs on the loading thread after every load of policy and lists (start-up
/// and each reload), once the build's scratch memory is freed: the binary uses it to have
/// its allocator hand that memory back to the system, since compiling a million domains
/// briefly needs several times the index's size.
pub async fn run(config: PathBuf, after_load: fn()) -> Result<(), RunError> {
    let path = config.clone();
    let snap = tokio::task::spawn_blocking(move || load_then(&path, after_load))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    for w in &snap.report.warnings {
        tracing::warn!(file = %w.file.display(), line = w.line, "{}", w.message);
    }
    let settings = snap.settings.server.clone();
    // The leaf cache is sized once, at start: a reload keeps the leaves (a leaf from
    // another CA is minted again when next asked for).
    let settings_leaf_cache = snap.settings.inspection.leaf_cache_size;
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: settings.listen,
            source,
        })?;
    let local = listener.local_addr()?;
    let admin_addr = snap.settings.admin.listen;
    let admin_listener =
        TcpListener::bind(admin_addr)
            .await
            .map_err(|source| RunError::Listen {
                addr: admin_addr,
                source,
            })?;
    let admin_local = admin_listener.local_addr()?;
    // Read once at start, like the listen address: a new certificate needs a restart.
    let admin_tls = match &snap.settings.admin.tls {
        Some((cert, key)) => Some(admin::tls_config(cert, key)?),
        None => None,
    };
    let enrol_listener = match snap.settings.inspection.enrol_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Listen { addr, source })?,
        ),
        None => None,
    };
    // Transparent mode's listeners (`[transparent]`), each optional.
    let transparent = snap.settings.transparent.clone();
    let mut transparent_listeners = Vec::new();
    for (addr, kind) in [
        (transparent.http_listen, Listener::Http),
        (transparent.https_listen, Listener::Https),
    ] {
        if let Some(addr) = addr {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Listen { addr, source })?;
            transparent_listeners.push((l, kind));
        }
    }
    let mut own = vec![local, admin_local];
    if let Some(l) = &enrol_listener {
        own.push(l.local_addr()?);
    }
    for (l, _) in &transparent_listeners {
        own.push(l.local_addr()?);
    }
    let own = Arc::new(own);
    let live = Arc::new(Live::new(snap));
    let pool = Pool::new(PoolSettings {
        idle_timeout: Duration::from_secs(90),
        max_idle_per_origin: 256,
    });
    let cap = connection_cap(settings.max_connections);
    let mut log_settings: LogSettings = live.get().settings.log.clone();
    if log_settings.node.is_empty() {
        log_settings.node = node_name();
    }
    // A file-size limit (RLIMIT_FSIZE) must make writes fail, not kill the process.
    let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25))?;
    let log_dir = log_settings.dir.clone();
    let handle = crate::decision_log::writer::open(log_settings).map_err(RunError::Log)?;
    tracing::info!(dir = %log_dir.display(), "decision log open");
    {
        // The record that the illegal lists were in force from the start.
        let snap = live.get();
        let illegal = crate::snapshot::illegal_counts(&snap);
        tracing::info!(illegal = %illegal, "illegal lists in force");
        handle.append_nowait(crate::decision_log::Body::Reload {
            what: crate::decision_log::ReloadKind::Policy,
            ok: true,
            detail: format!(
                "loaded at start: {} domains; illegal lists: {illegal}",
                snap.lists.domains.len()
            ),
        });
    }
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let alerts = crate::alerts::start(live.clone(), handle.clone(), metrics.clone())?;
    // Grants in etcd: a mirror kept by its own task (started below); the store is
    // chosen at start, like the listen address.
    let grants_mirror = match &live.get().settings.grants_store {
        crate::settings::GrantsStore::Etcd(etcd) => Some((
            Arc::new(crate::etcd_grants::Mirror::new(etcd.clone(), Utc::now())),
            std::sync::atomic::AtomicU64::new(0),
        )),
        crate::settings::GrantsStore::File => None,
    };
    let proxy = Arc::new(Proxy {
        live,
        config,
        log: DecisionLog { handle },
        auth: AuthCache::default(),
        directory: crate::directory::Directory::new(metrics.clone()),
        devices: crate::device::DeviceNames::default(),
        kerberos: crate::kerberos::Kerberos::default(),
        pool,
        metrics,
        alerts,
        tracker: TaskTracker::new(),
        own,
        after_load,
        leaves: crate::inspection::LeafCache::new(settings_leaf_cache),
        sessions: crate::inspection::Sessions::new(4096)
            .map_err(|e| std::io::Error::other(e.to_string()))?,
        feeds_running: tokio::sync::Mutex::new(()),
        grants_mirror,
        console: super::console::Console::default(),
    });
    let caps = Arc::new(Caps {
        global: Arc::new(Semaphore::new(cap)),
        per_client: Mutex::new(HashMap::new()),
        per_client_max: settings.max_connections_per_client,
    });
    let shutdown = CancellationToken::new();
    // With etcd, the mirror's task says when the grants (or the store's status) change;
    // the node waits a moment for the first read, so it starts with the grants.
    let (store_tx, mut store_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let store_task = match &proxy.grants_mirror {
        Some((mirror, _)) => {
            tracing::info!(target: "gatehouse::grants", endpoints = %mirror.settings.endpoints.join(", "), prefix = %mirror.settings.prefix, "grants in etcd");
            let task = tokio::spawn(crate::etcd_grants::sync(
                mirror.clone(),
                store_tx,
                STORE_PROBE,
                shutdown.clone(),
            ));
            let first = mirror.settings.dial_timeout + mirror.settings.request_timeout;
            let _ = tokio::time::timeout(first, store_rx.recv()).await;
            proxy.reload_grants();
            Some(task)
        }
        None => None,
    };
    proxy.metrics.lists_loaded.set(Utc::now().timestamp());
    proxy.set_snapshot_gauges();
    proxy.set_feed_gauges();
    tracing::info!(admin = %admin_local, "admin listener (metrics, health, grants API)");
    let enrol_task = match enrol_listener {
        Some(listener) => {
            tracing::info!(
                enrol = %listener.local_addr()?,
                "enrolment listener (the school CA certificate at /ca.crt)"
            );
            Some(tokio::spawn(enrol::serve(
                listener,
                proxy.live.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    tracing::info!(listen = %local, max_connections = cap, "gatehouse proxy listening");
    let domains = proxy.live.get().lists.domains.len();
    super::service::ready(&format!("serving on {local}; {domains} domains loaded"));
    // Never fires when the unit has no WatchdogSec.
    let mut watchdog = tokio::time::interval(
        super::service::watchdog_interval().unwrap_or(Duration::from_secs(86_400 * 365)),
    );

    // The grants file is watched through its directory, so that editors' and the CLI's
    // write-then-rename is seen; the watcher only turns file events into a reload signal.
    let (grants_tx, mut grants_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let grants_file = proxy.live.get().policy.grant_rules.file.clone();
    let _watcher = match proxy.grants_mirror {
        None => watch_grants(&grants_file, grants_tx),
        Some(_) => None,
    };
    let mut expiry_check = tokio::time::interval(Duration::from_secs(15));
    let mut expired_seen: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();

    // reload_on_change: the policy, users file and lists watched too, changes gathered
    // for a second (a ConfigMap swap or a list update is several events) into one reload.
    let (config_tx, mut config_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let _config_watcher = if settings.reload_on_change {
        let snap = proxy.live.get();
        super::reload::watch_config(
            &proxy.config,
            snap.policy.users_file.as_deref(),
            &snap.policy.lists_dir,
            &snap.policy.grant_rules.file,
            config_tx,
        )
    } else {
        None
    };

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;

    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        proxy.clone(),
        shutdown.clone(),
        admin_tls,
    ));
    let directory_sync = tokio::spawn(directory_sync(proxy.clone(), shutdown.clone()));
    let feeds_schedule = tokio::spawn(super::feeds::schedule(proxy.clone(), shutdown.clone()));
    let accept = {
        let proxy = proxy.clone();
        let caps = caps.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { accept_loop(listener, proxy, caps, shutdown, None).await })
    };
    let mut transparent_tasks = Vec::new();
    for (listener, kind) in transparent_listeners {
        tracing::info!(
            listen = %listener.local_addr()?,
            listener = kind.as_str(),
            "transparent-mode listener (connections redirected by the firewall)"
        );
        let proxy = proxy.clone();
        let caps = caps.clone();
        let shutdown = shutdown.clone();
        transparent_tasks.push(tokio::spawn(async move {
            accept_loop(listener, proxy, caps, shutdown, Some(kind)).await
        }));
    }
    loop {
        tokio::select! {
            _ = hup.recv() => proxy.reload().await,
            Some(()) = config_rx.recv() => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                while config_rx.try_recv().is_ok() {}
                tracing::info!("the policy or its lists changed on disk (reload_on_change)");
                proxy.reload().await;
            }
            Some(()) = grants_rx.recv() => {
                // Debounce: editors write in several steps.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while grants_rx.try_recv().is_ok() {}
                proxy.reload_grants();
            }
            Some(()) = store_rx.recv() => {
                while store_rx.try_recv().is_ok() {}
                proxy.reload_grants();
            }
            _ = expiry_check.tick() => proxy.audit_expiries(&mut expired_seen),
            _ = watchdog.tick() => super::service::alive(),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(
        grace_secs = settings.shutdown_grace.as_secs(),
        "shutting down: no new connections; finishing requests in flight"
    );
    super::service::stopping();
    shutdown.cancel();
    let _ = accept.await;
    for task in transparent_tasks {
        let _ = task.await;
    }
    let _ = admin_task.await;
    let _ = directory_sync.await;
    // An update in flight is not waited for: its files are whole (each written
    // atomically), and the next start loads whatever it finished.
    feeds_schedule.abort();
    if let Some(task) = store_task {
        let _ = task.await;
    }
    if let Some(task) = enrol_task {
        let _ = task.await;
    }
    proxy.tracker.close();
    if tokio::time::timeout(settings.shutdown_grace, proxy.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    proxy.log.handle.close().await;
    tracing::info!("gatehouse stopped");
    Ok(())
}

/// Re-reads signed-in users' directory groups every `sync_interval` of the settings in
/// force (checked again after each round, so a reload that adds, removes or changes
/// `[identity.directory]` takes effect), and checks once at start that the directory
/// answers, for `gatehouse_directory_up`.
async fn directory_sync(proxy: Arc<Proxy>, shutdown: CancellationToken) {
    let mut first = true;
    loop {
        let settings = proxy.live.get().settings.directory.clone();
        proxy
            .metrics
            .directory_configured
            .set(i64::from(settings.is_some()));
        let wait = match &settings {
            Some(d) if first => {
                match crate::directory::check(d).await {
                    Ok(()) => {
                        proxy.metrics.directory_up.set(1);
                        tracing::info!(target: "gatehouse::directory", url = %d.url, "directory reached");
                    }
                    Err(e) => {
                        proxy.metrics.directory_up.set(0);
                        tracing::warn!(target: "gatehouse::directory", error = %e, "directory not reached; new sign-ins are refused until it is");
                    }
                }
                d.sync_interval
            }
            Some(d) => {
                proxy.directory.sync(d).await;
                d.sync_interval
            }
            None => Duration::from_secs(5),
        };
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// This node's name: the host name.
/// This node's name in the decision log when `[log] node` is not set: the host name.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gatehouse".to_string())
}

/// Accepts connections on `listener`: the proxy's own, or with `transparent`, one of
/// transparent mode's (`transparent.rs`), under the same caps.
async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    caps: Arc<Caps>,
    shutdown: CancellationToken,
    transparent: Option<Listener>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a transient error: back off
                // rather than spin; connections in flight free descriptors as they end.
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some(kind) = transparent {
            proxy
                .metrics
                .transparent_connections
                .with_label_values(&[kind.as_str()])
                .inc();
        }
        let Ok(permit) = caps.global.clone().try_acquire_owned() else {
            proxy.metrics.refused_connections.inc();
            refuse_connection(stream, transparent, "the proxy is at its connection limit");
            continue;
        };
        let proxy = proxy.clone();
        let caps = caps.clone();
        let shutdown = shutdown.clone();
        proxy.clone().tracker.spawn(async move {
            let _permit = permit;
            let ip = canonical_ip(peer.ip());
            let Some(_slot) = caps.take(ip) else {
                proxy.metrics.refused_connections.inc();
                refuse_connection(
                    stream,
                    transparent,
                    "too many connections from this address",
                );
                return;
            };
            let _open = GaugeGuard::open(&proxy.metrics.connections);
            match transparent {
                None => serve_connection(proxy.clone(), stream, peer, shutdown, None).await,
                Some(Listener::Http) => {
                    let original = original_destination(&stream);
                    serve_connection(proxy.clone(), stream, peer, shutdown, Some(original)).await
                }
                Some(Listener::Https) => {
                    let _ = stream.set_nodelay(true);
                    let original = original_destination(&stream);
                    proxy
                        .clone()
                        .serve_transparent_tls(stream, peer, original)
                        .await
                }
            }
        });
    }
}

/// Answers `503` without reading the request and closes: excess connections are refused
/// at once, never queued. A redirected TLS connection is only closed: it expects a
/// ServerHello, not HTTP.
fn refuse_connection(stream: TcpStream, transparent: Option<Listener>, why: &str) {
    if transparent == Some(Listener::Https) {
        return;
    }
    let body = format!("{why}\n");
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(msg.as_bytes());
}

/// Serves one HTTP/1.1 connection: a proxy client's, or with `transparent` (the original
/// destination, if redirected) one redirected from port 80.
async fn serve_connection(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    transparent: Option<Option<SocketAddr>>,
) {
    let _ = stream.set_nodelay(true);
    let settings = proxy.live.get().settings.server.clone();
    let limits = ConnLimits {
        head_bytes: settings.max_header_bytes,
        headers: settings.max_headers,
        uri_bytes: settings.max_uri_bytes,
        head_timeout: settings.head_timeout,
        idle_timeout: settings.idle_timeout,
        body_idle_timeout: settings.body_idle_timeout,
        write_idle_timeout: settings.write_idle_timeout,
    };
    let (io, signal) = GuardedIo::new(stream, limits);
    let service = {
        let proxy = proxy.clone();
        service_fn(move |req| {
            let proxy = proxy.clone();
            let signal = signal.clone();
            async move {
                match transparent {
                    None => proxy.handle(req, peer, signal).await,
                    Some(original) => proxy.handle_transparent(req, peer, original, signal).await,
                }
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size((settings.max_header_bytes * 2).max(16 * 1024))
        .max_headers(settings.max_headers);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(client = %peer, error = %e, "connection ended");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
