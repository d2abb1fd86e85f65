//! Grants in etcd (`[grants] store = "etcd"`): several nodes, one set of grants.
//!
//! Each grant is one key, `{prefix}grant/{id}`, whose value is a one-grant grants file
//! (`[[grant]]` and its fields, exactly as in `grants.toml`), so it is validated by the
//! file store's own [`crate::core::grants::compile_file`] and an error names the key and
//! the line. A revoked or expired grant moves to `{prefix}archived/{id}`, as the file
//! store moves it to `[[archived]]`: the record stays for `grant list` and the audit
//! trail. (No etcd lease, then: a lease would delete that record at expiry, and the
//! expiry is enforced by the grant's own end time anyway.)
//!
//! Every node keeps a [`Mirror`]: a full copy from a range read, kept current by a
//! watch from that read's revision ([`sync`]). On a watch error, a compaction or a
//! health probe that fails, the node marks the store down, keeps the grants it last
//! saw (their expiry is checked at every decision, so it still holds), and reads and
//! watches again with backoff. Writes ([`read`], [`commit`]) are transactions that
//! compare every key they touch, so two nodes editing at once cannot lose an edit or
//! hand out one id twice.
//!
//! This is the shell: it does I/O and reads the clock; the core only sees a
//! [`GrantSet`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, TxnOp, WatchOptions,
};
use tokio_util::sync::CancellationToken;

use crate::core::classify::CompiledLists;
use crate::core::config::{ConfigError, ConfigErrorKind, ConfigErrors, Source};
use crate::core::grants::GrantSet;
use crate::core::policy::Policy;
use crate::settings::EtcdSettings;

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// A file named in `[grants.etcd]` could not be read.
    #[error("[grants.etcd]: reading {}: {error}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The cluster did not answer, or refused the request.
    #[error("the grants store (etcd at {endpoints}) is unavailable: {error}")]
    Unavailable {
        /// The endpoints tried.
        endpoints: String,
        /// Why.
        error: etcd_client::Error,
    },
    /// Another node kept changing the same grants; nothing was changed.
    #[error("the grants store kept changing under this edit; nothing was changed, try again")]
    Contended,
    /// A key or value is not UTF-8 text.
    #[error("etcd key {0:?} is not UTF-8 text")]
    NotText(String),
}

/// The key of a grant in force.
pub fn grant_key(settings: &EtcdSettings, id: &str) -> String {
    format!("{}grant/{id}", settings.prefix)
}

/// The key of an archived (revoked or expired) grant.
pub fn archived_key(settings: &EtcdSettings, id: &str) -> String {
    format!("{}archived/{id}", settings.prefix)
}

/// Connects to the cluster with the settings' TLS, user and timeouts.
pub async fn connect(settings: &EtcdSettings) -> Result<Client, EtcdError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(settings.dial_timeout)
        .with_timeout(settings.request_timeout)
        // A member that dies without closing the connection is noticed within seconds.
        .with_keep_alive(Duration::from_secs(2), settings.request_timeout)
        .with_keep_alive_while_idle(true);
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| EtcdError::File {
            path: path.to_path_buf(),
            error,
        })
    };
    if let Some((user, password_file)) = &settings.user {
        let password = String::from_utf8_lossy(&read(password_file)?)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        options = options.with_user(user.clone(), password);
    }
    if settings.tls() {
        let mut tls = etcd_client::TlsOptions::new();
        // Settings require a CA for https:// members: a school's etcd has a private one.
        if let Some(ca) = &settings.ca_file {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        }
        if let Some((cert, key)) = &settings.client_cert {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    Client::connect(&settings.endpoints, Some(options))
        .await
        .map_err(|error| unavailable(settings, error))
}

fn unavailable(settings: &EtcdSettings, error: etcd_client::Error) -> EtcdError {
    EtcdError::Unavailable {
        endpoints: settings.endpoints.join(", "),
        error,
    }
}

/// The grants' keys and values, and each key's `mod_revision` (for the transaction
/// that changes them).
#[derive(Debug, Clone, Default)]
pub struct Entries {
    /// Key → (value, mod_revision).
    pub keys: BTreeMap<String, (String, i64)>,
    /// The store's revision when read.
    pub revision: i64,
}

impl Entries {
    /// The grants as one grants file: grants in force, then the archive. Each value is
    /// a whole `[[grant]]` or `[[archived]]` table, so joining them is the file.
    pub fn document(&self, settings: &EtcdSettings) -> String {
        document(
            self.keys.iter().map(|(k, (v, _))| (k.as_str(), v.as_str())),
            settings,
        )
    }
}

fn document<'a>(
    entries: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    settings: &EtcdSettings,
) -> String {
    let grants = format!("{}grant/", settings.prefix);
    let archived = format!("{}archived/", settings.prefix);
    let mut text = String::new();
    for wanted in [&grants, &archived] {
        for (key, value) in entries.clone() {
            if key.starts_with(wanted.as_str()) {
                text.push_str(value);
                if !value.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
    }
    text
}

/// Reads every grant key.
pub async fn read(client: &mut Client, settings: &EtcdSettings) -> Result<Entries, EtcdError> {
    let response = client
        .get(
            settings.prefix.as_str(),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .map_err(|e| unavailable(settings, e))?;
    let mut entries = Entries {
        revision: response.header().map_or(0, |h| h.revision()),
        ..Entries::default()
    };
    for kv in response.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let value = kv
            .value_str()
            .map_err(|_| EtcdError::NotText(key.clone()))?
            .to_string();
        entries.keys.insert(key, (value, kv.mod_revision()));
    }
    Ok(entries)
}

/// Writes `wanted` (key → value; keys of `read` absent from it are deleted) if no key
/// it touches changed since `read`. `Ok(false)`: one did; read again and retry.
pub async fn commit(
    client: &mut Client,
    settings: &EtcdSettings,
    read: &Entries,
    wanted: &BTreeMap<String, String>,
) -> Result<bool, EtcdError> {
    let mut compares = Vec::new();
    let mut ops = Vec::new();
    for (key, value) in wanted {
        match read.keys.get(key) {
            Some((old, _)) if old == value => {}
            Some((_, revision)) => {
                compares.push(Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    *revision,
                ));
                ops.push(TxnOp::put(key.as_str(), value.as_str(), None));
            }
            None => {
                // A new key: no other node may have created it meanwhile (the same id).
                compares.push(Compare::version(key.as_str(), CompareOp::Equal, 0));
                ops.push(TxnOp::put(key.as_str(), value.as_str(), None));
            }
        }
    }
    for (key, (_, revision)) in &read.keys {
        if !wanted.contains_key(key) {
            compares.push(Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                *revision,
            ));
            ops.push(TxnOp::delete(key.as_str(), None));
        }
    }
    if ops.is_empty() {
        return Ok(true);
    }
    let txn = etcd_client::Txn::new().when(compares).and_then(ops);
    let response = client
        .txn(txn)
        .await
        .map_err(|e| unavailable(settings, e))?;
    Ok(response.succeeded())
}

/// Compiles a mirror's entries against a policy: each key on its own, so that an error
/// names the key and its line. Like the grants file, a set with any invalid grant is
/// refused whole (the caller keeps the set in force).
pub fn compile(
    entries: &BTreeMap<String, String>,
    settings: &EtcdSettings,
    policy: &Policy,
    lists: &CompiledLists,
    now: DateTime<Utc>,
) -> Result<GrantSet, ConfigErrors> {
    let grants = format!("{}grant/", settings.prefix);
    let archived = format!("{}archived/", settings.prefix);
    let mut set = GrantSet::default();
    let mut errors = Vec::new();
    for (key, value) in entries {
        let (kind, id) = match (key.strip_prefix(&grants), key.strip_prefix(&archived)) {
            (Some(id), _) => ("grant", id),
            (_, Some(id)) => ("archived", id),
            // Not a grant (another tool's key under the prefix): not ours to judge.
            _ => continue,
        };
        let path = format!("etcd:{key}");
        let source = Source::new(Path::new(&path), value);
        match crate::core::grants::compile_file(value, &source, policy, lists, now) {
            Ok(one) => {
                let ids: Vec<&str> = match kind {
                    "grant" => one.grants.iter().map(|g| &*g.id).collect(),
                    _ => one.archived.iter().map(|(id, _)| id.as_str()).collect(),
                };
                if ids != [id] {
                    errors.push(ConfigError {
                        file: path.into(),
                        line: None,
                        kind: ConfigErrorKind::InvalidValue(format!(
                            "the value must be one [[{kind}]] whose id is {id:?}"
                        )),
                    });
                    continue;
                }
                set.grants.extend(one.grants);
                set.archived.extend(one.archived);
            }
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Whether this node is in touch with the store, and since when it is not.
#[derive(Debug, Clone, Default)]
pub struct StoreStatus {
    /// A read and watch are running and the last probe answered.
    pub up: bool,
    /// When the node lost the store (`None` while up, or before the first contact).
    pub down_since: Option<DateTime<Utc>>,
    /// When the mirror was last known to match the store.
    pub last_sync: Option<DateTime<Utc>>,
    /// Why it is down.
    pub error: Option<String>,
}

/// A node's copy of the grants in etcd, and how it stands with the store.
#[derive(Debug)]
pub struct Mirror {
    /// The settings it follows (fixed at start).
    pub settings: Arc<EtcdSettings>,
    entries: Mutex<BTreeMap<String, String>>,
    status: Mutex<StoreStatus>,
    /// Bumped at every change of `entries`, so that a node recompiles only then.
    generation: std::sync::atomic::AtomicU64,
}

impl Mirror {
    /// An empty mirror, down until the first read (since `now`).
    pub fn new(settings: Arc<EtcdSettings>, now: DateTime<Utc>) -> Mirror {
        Mirror {
            settings,
            entries: Mutex::new(BTreeMap::new()),
            status: Mutex::new(StoreStatus {
                up: false,
                down_since: Some(now),
                last_sync: None,
                error: Some("not yet reached".into()),
            }),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The keys and values last seen.
    pub fn entries(&self) -> BTreeMap<String, String> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// How the node stands with the store.
    pub fn status(&self) -> StoreStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The grants last seen, compiled against `policy`.
    pub fn compile(
        &self,
        policy: &Policy,
        lists: &CompiledLists,
        now: DateTime<Utc>,
    ) -> Result<GrantSet, ConfigErrors> {
        compile(&self.entries(), &self.settings, policy, lists, now)
    }

    /// Changes with every change of the entries.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn replace(&self, entries: BTreeMap<String, String>) {
        if let Ok(mut e) = self.entries.lock() {
            if *e != entries {
                *e = entries;
                self.generation
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
    }

    fn apply(&self, events: &[etcd_client::Event]) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match event.event_type() {
                EventType::Put => {
                    entries.insert(key, String::from_utf8_lossy(kv.value()).into_owned());
                }
                EventType::Delete => {
                    entries.remove(&key);
                }
            }
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn synced(&self, now: DateTime<Utc>) {
        if let Ok(mut s) = self.status.lock() {
            s.up = true;
            s.down_since = None;
            s.last_sync = Some(now);
            s.error = None;
        }
    }

    fn lost(&self, now: DateTime<Utc>, error: String) {
        if let Ok(mut s) = self.status.lock() {
            if s.up || s.down_since.is_none() {
                s.down_since = Some(now);
            }
            s.up = false;
            s.error = Some(error);
        }
    }
}

/// Keeps `mirror` current until `shutdown`: a range read, then a watch from its
/// revision, a health probe every `probe` (a silent partition does not end a watch);
/// on any failure, the store is marked down and read again after a backoff (0.25 s
/// doubling to 5 s). Sends on `changed` whenever the mirror's contents or status
/// change, for the caller to recompile and set its gauges.
pub async fn sync(
    mirror: Arc<Mirror>,
    changed: tokio::sync::mpsc::UnboundedSender<()>,
    probe: Duration,
    shutdown: CancellationToken,
) {
    let settings = mirror.settings.clone();
    let mut backoff = Duration::from_millis(250);
    loop {
        let result = tokio::select! {
            r = follow(&mirror, &settings, &changed, probe, &mut backoff) => r,
            _ = shutdown.cancelled() => return,
        };
        let why = match result {
            Ok(()) => "the watch ended (compaction or cancellation); reading again".to_string(),
            Err(e) => e.to_string(),
        };
        let was_up = mirror.status().up;
        mirror.lost(Utc::now(), why.clone());
        if was_up {
            tracing::warn!(target: "gatehouse::grants", error = %why, "grants store lost: keeping the grants last seen");
        } else {
            tracing::debug!(target: "gatehouse::grants", error = %why, "grants store still unavailable");
        }
        let _ = changed.send(());
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One round: read, watch, probe, until something fails (`Err`) or the watch is
/// cancelled by the server (`Ok`, e.g. after a compaction).
async fn follow(
    mirror: &Mirror,
    settings: &EtcdSettings,
    changed: &tokio::sync::mpsc::UnboundedSender<()>,
    probe: Duration,
    backoff: &mut Duration,
) -> Result<(), EtcdError> {
    let mut client = connect(settings).await?;
    let entries = read(&mut client, settings).await?;
    let mut stream = client
        .watch(
            settings.prefix.as_str(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(entries.revision + 1),
            ),
        )
        .await
        .map_err(|e| unavailable(settings, e))?;
    mirror.replace(entries.keys.into_iter().map(|(k, (v, _))| (k, v)).collect());
    let was_down = !mirror.status().up;
    mirror.synced(Utc::now());
    if was_down {
        tracing::info!(target: "gatehouse::grants", revision = entries.revision, "grants store reached: grants read and watched");
    }
    *backoff = Duration::from_millis(250);
    let _ = changed.send(());
    let mut ticks = tokio::time::interval(probe);
    ticks.tick().await;
    loop {
        tokio::select! {
            message = stream.message() => {
                match message.map_err(|e| unavailable(settings, e))? {
                    Some(response) if response.canceled() || response.compact_revision() > 0 => {
                        tracing::warn!(target: "gatehouse::grants", reason = response.cancel_reason(), compacted = response.compact_revision(), "grants watch cancelled");
                        return Ok(());
                    }
                    Some(response) => {
                        if !response.events().is_empty() {
                            mirror.apply(response.events());
                            mirror.synced(Utc::now());
                            let _ = changed.send(());
                        }
                    }
                    None => return Ok(()),
                }
            }
            _ = ticks.tick() => {
                client.status().await.map_err(|e| unavailable(settings, e))?;
                mirror.synced(Utc::now());
                let _ = changed.send(());
            }
        }
    }
}

/// Why [`fetch`] has no grants to give.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] EtcdError),
    /// The store's grants do not validate against this policy.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// No runtime could be started for the read.
    #[error("{0}")]
    Runtime(#[from] std::io::Error),
}

/// Reads the grants once and compiles them against `policy`: what `gatehouse check` and
/// `classify` use (a running node has its [`Mirror`]). Blocking; call it from
/// synchronous code.
pub fn fetch(
    settings: &EtcdSettings,
    policy: &Policy,
    lists: &CompiledLists,
    now: DateTime<Utc>,
) -> Result<GrantSet, FetchError> {
    let entries = block_on(async {
        let mut client = connect(settings).await?;
        read(&mut client, settings).await
    })??;
    let entries: BTreeMap<String, String> =
        entries.keys.into_iter().map(|(k, (v, _))| (k, v)).collect();
    compile(&entries, settings, policy, lists, now).map_err(FetchError::Invalid)
}

/// Runs `f` to completion from synchronous code: on the current runtime's handle when
/// called from one of its blocking threads (the admin API's `spawn_blocking`), else on
/// a runtime of its own (the CLI).
pub fn block_on<F: std::future::Future>(f: F) -> std::io::Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(f)),
        Err(_) => Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EtcdSettings {
        EtcdSettings {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/g/".into(),
            ca_file: None,
            client_cert: None,
            user: None,
            dial_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_document_is_the_grants_then_the_archive() {
        let mut entries = Entries::default();
        for (key, value) in [
            ("/g/archived/g-1", "[[archived]]\nid = \"g-1\""),
            ("/g/grant/g-2", "[[grant]]\nid = \"g-2\"\n"),
            ("/g/other", "not a grant"),
        ] {
            entries.keys.insert(key.into(), (value.into(), 1));
        }
        assert_eq!(
            entries.document(&settings()),
            "[[grant]]\nid = \"g-2\"\n[[archived]]\nid = \"g-1\"\n"
        );
        assert_eq!(grant_key(&settings(), "g-7"), "/g/grant/g-7");
        assert_eq!(archived_key(&settings(), "g-7"), "/g/archived/g-7");
    }

    #[test]
    fn a_mirror_is_down_until_synced_and_remembers_since_when() {
        let t0 = DateTime::from_timestamp(1_000, 0).expect("time");
        let t1 = DateTime::from_timestamp(2_000, 0).expect("time");
        let t2 = DateTime::from_timestamp(3_000, 0).expect("time");
        let m = Mirror::new(Arc::new(settings()), t0);
        assert!(!m.status().up);
        assert_eq!(m.status().down_since, Some(t0));
        m.synced(t1);
        assert!(m.status().up && m.status().down_since.is_none());
        m.lost(t2, "gone".into());
        m.lost(t2 + chrono::Duration::seconds(5), "still gone".into());
        let s = m.status();
        assert_eq!(
            (s.up, s.down_since, s.last_sync),
            (false, Some(t2), Some(t1))
        );
        assert_eq!(s.error.as_deref(), Some("still gone"));
        let g = m.generation();
        m.replace(BTreeMap::from([(
            "/g/grant/g-1".to_string(),
            "x".to_string(),
        )]));
        assert_ne!(m.generation(), g, "a change is a new generation");
        let g = m.generation();
        m.replace(BTreeMap::from([(
            "/g/grant/g-1".to_string(),
            "x".to_string(),
        )]));
        assert_eq!(m.generation(), g, "the same entries are not");
    }
}
