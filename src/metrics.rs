//! Prometheus metrics: what the IT Lead's dashboards and alerts read.
//!
//! Every label comes from a bounded, configured set — group names, category names,
//! actions, error kinds — never a user, host or URL, so the number of series cannot be
//! driven up by traffic. Gauges that mirror state kept elsewhere (connections, the
//! decision log's queue) are read at scrape time.
//! A [`GaugeGuard`] keeps a gauge of things open (connections, tunnels) true: it counts
//! down when dropped, however the connection ends.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The metrics of one Gatehouse process.
pub struct Metrics {
    registry: Registry,
    /// Requests by group, action and most severe category (`none` when unlisted).
    pub requests: IntCounterVec,
    /// Time from a request's head to its verdict.
    pub decision_seconds: Histogram,
    /// Time from sending a request upstream to its response head.
    pub upstream_seconds: Histogram,
    /// Bytes by direction (`up`: client to upstream, `down`).
    pub bytes: IntCounterVec,
    /// Client connections open.
    pub connections: IntGauge,
    /// Tunnels open.
    pub tunnels: IntGauge,
    /// Connections refused by a cap.
    pub refused_connections: IntCounter,
    /// Upstream errors by kind (`dns`, `refused`, `timeout`, `internal`).
    pub upstream_errors: IntCounterVec,
    /// Requests and tunnels dialled to an engine's safe-search address, by engine (the
    /// policy's engine names: a bounded set).
    pub safe_search_rewrites: IntCounterVec,
    /// Leaf certificates for inspected tunnels, by `result`: `hit` (from the cache),
    /// `miss` (minted), `error` (could not be minted).
    pub leaf_cache: IntCounterVec,
    /// Tunnels inspected, by why: `group` (`inspect_tls`) or `illegal_pages`.
    pub inspected_tunnels: IntCounterVec,
    /// `407` challenges sent.
    pub auth_challenges: IntCounter,
    /// Failed proxy authentications.
    pub auth_failures: IntCounter,
    /// List entries per category.
    pub list_entries: IntGaugeVec,
    /// When the lists in force were loaded (Unix seconds).
    pub lists_loaded: IntGauge,
    /// When each category's newest list file was last changed (Unix seconds), by
    /// category and severity.
    pub list_modified: IntGaugeVec,
    /// Grants in force (ticketed grants and lesson overrides).
    pub grants_active: IntGauge,
    /// Teachers' lesson overrides in force, by effect (`allow`, `block`).
    pub lesson_overrides_active: IntGaugeVec,
    /// Reloads by kind (`policy`, `grants`) and result (`ok`, `error`).
    pub reloads: IntCounterVec,
    /// Decision-log entries written.
    pub log_records: IntCounter,
    /// Decision-log entries waiting for the writer.
    pub log_queue_depth: IntGauge,
    /// Duration of the last fsync.
    pub log_fsync_seconds: prometheus::Gauge,
    /// Failed decision-log writes.
    pub log_write_failures: IntCounter,
    /// Entries that could not be logged.
    pub log_lost: IntCounter,
    /// 1 while the decision log cannot be written (fail-closed groups refused).
    pub log_failing: IntGauge,
    /// Safeguarding alerts delivered, by channel (`email`, `webhook`).
    pub alerts_sent: IntCounterVec,
    /// Failed attempts to deliver an alert, by channel (each is retried).
    pub alerts_failed: IntCounterVec,
    /// Alerts dropped because the alert task's queue was full.
    pub alerts_dropped: IntCounter,
    /// Acknowledgements of alerts by the DSL (`POST /api/alerts/{reference}/ack`).
    pub alerts_acknowledged: IntCounter,
    /// Alerts in the outbox, not yet delivered on every channel.
    pub alerts_outbox: IntGauge,
    /// 1 when the policy has `[identity.directory]`.
    pub directory_configured: IntGauge,
    /// 1 while the directory answered its last contact (sign-in, sync or check).
    pub directory_up: IntGauge,
    /// Directory sign-ins asked of the directory, by result (`ok`, `refused`,
    /// `unavailable`).
    pub directory_binds: IntCounterVec,
    /// Sign-ins answered from the cache, without the directory.
    pub directory_cache_hits: IntCounter,
    /// Group re-reads of signed-in users, by result (`ok`, `error`).
    pub directory_syncs: IntCounterVec,
    /// List feed updates, by source (the policy's `[[lists.sources]]` names) and result
    /// (`updated`, `not_modified`, `refused`, `failed`).
    pub list_updates: IntCounterVec,
    /// When each list feed was last known current (updated or not modified), Unix
    /// seconds; staleness is `time()` minus this.
    pub list_source_last_success: IntGaugeVec,
    /// 1 while the grants store answers (always 1 for the grants file; for etcd, while
    /// the node's read and watch run and its probe answers).
    pub grants_store_up: IntGauge,
    /// When the node's grants were last known to match the store (Unix seconds).
    pub grants_store_last_sync: IntGauge,
    /// Connections accepted by transparent mode's listeners, by `listener` (`http` for
    /// redirected port 80, `https` for redirected port 443).
    pub transparent_connections: IntCounterVec,
    /// Web console sign-ins, by result (`ok`, `failed`, `locked`).
    pub console_sign_ins: IntCounterVec,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c =
        IntCounterVec::new(Opts::new(name, help), labels).expect("metric definitions are valid");
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric definitions are valid");
    registry
        .register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric definitions are valid");
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("metric definitions are valid");
    registry
        .register(Box::new(h.clone()))
        .expect("each metric is registered once");
    h
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let _ = registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        let build = IntGaugeVec::new(
            Opts::new("gatehouse_build_info", "Gatehouse version (always 1)"),
            &["version"],
        )
        .expect("metric definitions are valid");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry
            .register(Box::new(build))
            .expect("each metric is registered once");
        let list_entries = IntGaugeVec::new(
            Opts::new("gatehouse_list_entries", "Entries in each category's lists"),
            &["category"],
        )
        .expect("metric definitions are valid");
        registry
            .register(Box::new(list_entries.clone()))
            .expect("each metric is registered once");
        let lesson_overrides_active = IntGaugeVec::new(
            Opts::new(
                "gatehouse_lesson_overrides_active",
                "Teachers' lesson overrides in force, by effect",
            ),
            &["effect"],
        )
        .expect("metric definitions are valid");
        registry
            .register(Box::new(lesson_overrides_active.clone()))
            .expect("each metric is registered once");
        let fsync = prometheus::Gauge::new(
            "gatehouse_log_fsync_last_seconds",
            "Duration of the decision log's last fsync",
        )
        .expect("metric definitions are valid");
        registry
            .register(Box::new(fsync.clone()))
            .expect("each metric is registered once");
        let fast = vec![
            0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
            0.05,
        ];
        let slow = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let metrics = Metrics {
            requests: counter_vec(
                &registry,
                "gatehouse_requests_total",
                "Requests decided, by group, action and most severe category",
                &["group", "action", "category"],
            ),
            decision_seconds: histogram(
                &registry,
                "gatehouse_decision_seconds",
                "Time from a request's head to its verdict, logged",
                fast,
            ),
            upstream_seconds: histogram(
                &registry,
                "gatehouse_upstream_seconds",
                "Time from sending a request upstream to its response head",
                slow,
            ),
            bytes: counter_vec(
                &registry,
                "gatehouse_bytes_total",
                "Bytes forwarded, by direction",
                &["direction"],
            ),
            connections: gauge(
                &registry,
                "gatehouse_connections",
                "Client connections open",
            ),
            tunnels: gauge(
                &registry,
                "gatehouse_tunnels",
                "CONNECT tunnels and upgraded connections open",
            ),
            refused_connections: counter(
                &registry,
                "gatehouse_refused_connections_total",
                "Connections refused at a connection cap",
            ),
            upstream_errors: counter_vec(
                &registry,
                "gatehouse_upstream_errors_total",
                "Upstream failures by kind",
                &["kind"],
            ),
            leaf_cache: counter_vec(
                &registry,
                "gatehouse_inspection_leaf_cache_total",
                "Leaf certificates for inspected tunnels: hit (cached), miss (minted), error",
                &["result"],
            ),
            inspected_tunnels: counter_vec(
                &registry,
                "gatehouse_inspected_tunnels_total",
                "TLS tunnels inspected, by why: group (inspect_tls) or illegal_pages",
                &["why"],
            ),
            safe_search_rewrites: counter_vec(
                &registry,
                "gatehouse_safe_search_rewrites_total",
                "Requests and tunnels dialled to a search engine's or YouTube's safe-search address, by engine",
                &["engine"],
            ),
            auth_challenges: counter(
                &registry,
                "gatehouse_auth_challenges_total",
                "407 Proxy Authentication Required answers",
            ),
            auth_failures: counter(
                &registry,
                "gatehouse_auth_failures_total",
                "Failed proxy authentications",
            ),
            list_entries,
            lists_loaded: gauge(
                &registry,
                "gatehouse_lists_loaded_timestamp_seconds",
                "When the lists in force were loaded",
            ),
            grants_active: gauge(&registry, "gatehouse_grants_active", "Grants in force"),
            lesson_overrides_active,
            reloads: counter_vec(
                &registry,
                "gatehouse_reloads_total",
                "Reloads by kind and result",
                &["kind", "result"],
            ),
            log_records: counter(
                &registry,
                "gatehouse_log_records_total",
                "Decision-log entries written",
            ),
            log_queue_depth: gauge(
                &registry,
                "gatehouse_log_queue_depth",
                "Decision-log entries waiting for the writer",
            ),
            log_fsync_seconds: fsync,
            log_write_failures: counter(
                &registry,
                "gatehouse_log_write_failures_total",
                "Failed decision-log writes",
            ),
            log_lost: counter(
                &registry,
                "gatehouse_log_lost_records_total",
                "Entries that could not be logged",
            ),
            log_failing: gauge(
                &registry,
                "gatehouse_log_failing",
                "1 while the decision log cannot be written",
            ),
            alerts_sent: counter_vec(
                &registry,
                "gatehouse_alerts_sent_total",
                "Safeguarding alerts delivered, by channel",
                &["channel"],
            ),
            alerts_failed: counter_vec(
                &registry,
                "gatehouse_alerts_failed_total",
                "Failed attempts to deliver a safeguarding alert, by channel (retried)",
                &["channel"],
            ),
            alerts_dropped: counter(
                &registry,
                "gatehouse_alerts_dropped_total",
                "Safeguarding alerts dropped: the alert queue was full",
            ),
            alerts_acknowledged: counter(
                &registry,
                "gatehouse_alerts_acknowledged_total",
                "Safeguarding alerts acknowledged by the DSL",
            ),
            alerts_outbox: gauge(
                &registry,
                "gatehouse_alerts_outbox",
                "Safeguarding alerts in the outbox, not yet delivered on every channel",
            ),
            directory_configured: gauge(
                &registry,
                "gatehouse_directory_configured",
                "1 when the policy signs users in against a directory",
            ),
            directory_up: gauge(
                &registry,
                "gatehouse_directory_up",
                "1 while the directory answered its last contact",
            ),
            directory_binds: counter_vec(
                &registry,
                "gatehouse_directory_binds_total",
                "Directory sign-ins asked of the directory, by result",
                &["result"],
            ),
            directory_cache_hits: counter(
                &registry,
                "gatehouse_directory_cache_hits_total",
                "Directory sign-ins answered from the cache",
            ),
            directory_syncs: counter_vec(
                &registry,
                "gatehouse_directory_syncs_total",
                "Re-reads of signed-in users' directory groups, by result",
                &["result"],
            ),
            list_updates: counter_vec(
                &registry,
                "gatehouse_list_updates_total",
                "List feed updates, by source and result",
                &["source", "result"],
            ),
            list_modified: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "gatehouse_list_category_modified_timestamp_seconds",
                        "When each category's newest list file in force was last changed (0: no list file)",
                    ),
                    &["category", "severity"],
                )
                .expect("metric definitions are valid");
                registry
                    .register(Box::new(g.clone()))
                    .expect("each metric is registered once");
                g
            },
            list_source_last_success: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "gatehouse_list_source_last_success_timestamp_seconds",
                        "When each list feed was last known current (updated or not modified)",
                    ),
                    &["source"],
                )
                .expect("metric definitions are valid");
                registry
                    .register(Box::new(g.clone()))
                    .expect("each metric is registered once");
                g
            },
            grants_store_up: gauge(
                &registry,
                "gatehouse_grants_store_up",
                "1 while the grants store (file or etcd) answers",
            ),
            grants_store_last_sync: gauge(
                &registry,
                "gatehouse_grants_store_last_sync_timestamp_seconds",
                "When this node's grants were last known to match the store",
            ),
            transparent_connections: counter_vec(
                &registry,
                "gatehouse_transparent_connections_total",
                "Connections redirected to transparent mode's listeners, by listener (http, https)",
                &["listener"],
            ),
            console_sign_ins: counter_vec(
                &registry,
                "gatehouse_console_sign_ins_total",
                "Web console sign-ins, by result (ok, failed, locked)",
                &["result"],
            ),
            registry,
        };
        for channel in ["email", "webhook"] {
            metrics.alerts_sent.with_label_values(&[channel]);
            metrics.alerts_failed.with_label_values(&[channel]);
        }
        // Series of the small fixed label sets exist from the start, at zero, so that
        // rates and alerts work before the first event.
        for direction in ["up", "down"] {
            metrics.bytes.with_label_values(&[direction]);
        }
        for kind in ["dns", "refused", "timeout", "internal"] {
            metrics.upstream_errors.with_label_values(&[kind]);
        }
        for kind in ["policy", "grants"] {
            for result in ["ok", "error"] {
                metrics.reloads.with_label_values(&[kind, result]);
            }
        }
        for result in ["ok", "refused", "unavailable"] {
            metrics.directory_binds.with_label_values(&[result]);
        }
        for result in ["ok", "error"] {
            metrics.directory_syncs.with_label_values(&[result]);
        }
        for result in ["hit", "miss", "error"] {
            metrics.leaf_cache.with_label_values(&[result]);
        }
        for listener in ["http", "https"] {
            metrics
                .transparent_connections
                .with_label_values(&[listener]);
        }
        for result in ["ok", "failed", "locked"] {
            metrics.console_sign_ins.with_label_values(&[result]);
        }
        metrics
    }

    /// Brings a counter mirrored from an atomic up to `value`.
    pub fn sync(counter: &IntCounter, value: u64) {
        let current = counter.get();
        if value > current {
            counter.inc_by(value - current);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counts one open connection or tunnel in a gauge until dropped.
pub struct GaugeGuard(prometheus::IntGauge);

impl GaugeGuard {
    /// Increments `gauge` now and decrements it when the guard drops.
    pub fn open(gauge: &prometheus::IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
