//! List feeds (`[[lists.sources]]`): fetched over HTTPS, checked, imported with
//! [`crate::import`] (the same reading as `gatehouse lists import`), compiled, and only
//! then left in place. `gatehouse lists update`, `POST /api/lists/update` and the
//! in-process schedule (`[lists] update_every`) all come here.
//!
//! An update of one source goes: fetch (with the `ETag` / `Last-Modified` of the last
//! good fetch, so an unchanged feed is a `304` and costs nothing; the size bound is
//! enforced while the body streams in) → pin (`sha256`) → read and count (a dry run of
//! the import: a corrupt archive or a bad line count stops here) → the shrink guard (an
//! update that takes more than `shrink_guard` of a category's entries from this source
//! away is refused unless an override with a reason is given; never for an `illegal`
//! category) → write each list file atomically → load the whole policy as start-up does.
//! If that load fails, the files written are put back as they were. Whatever happens,
//! the lists in force stay until the caller's reload swaps the new ones in.
//!
//! What was fetched when, and with which validators, is kept per source in
//! `<lists.dir>/.feeds/state.json`.
//!
//! Shell, not core: it reads and writes files, the network and the clock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use crate::core::category::Severity;
use crate::core::config::{ConfigError, ConfigErrorKind, Name, RawCategory, RawLists, Source};
use crate::core::feed::{self, Format};
use crate::lists::CacheMode;
use crate::snapshot::Snapshot;

/// Default `max_bytes`: a whole UT1 tarball is about 20 MB and a 5-million-line hosts
/// file about 150 MB; anything larger is a wrong URL or a hostile server.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default `shrink_guard`: a feed that loses a fifth of a category at once is far more
/// often truncated or broken than genuinely cleaned up.
pub const DEFAULT_SHRINK_GUARD: f64 = 0.2;
/// Default `max_entries`.
pub const DEFAULT_MAX_ENTRIES: u64 = 50_000_000;
/// The longest one fetch may take, connection to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects followed (each to `https://` only).
const MAX_REDIRECTS: usize = 4;
/// The shortest `update_every`: feeds publish a few times a day at most.
const MIN_UPDATE_EVERY: Duration = Duration::from_secs(300);

/// One `[[lists.sources]]` entry, checked.
#[derive(Debug, Clone)]
pub struct FeedSource {
    /// Its name, and the suffix of the files it writes (`domains.<name>`).
    pub name: String,
    /// Where it is fetched from.
    pub url: http::Uri,
    /// Its format.
    pub format: Format,
    /// For the single-list formats: the category it fills.
    pub category: Option<String>,
    /// For UT1: the map file; `None` for the built-in map.
    pub map: Option<PathBuf>,
    /// The SHA-256 the fetched file must have.
    pub sha256: Option<[u8; 32]>,
    /// Most bytes fetched.
    pub max_bytes: u64,
    /// Fewest entries (over all categories) an update may have.
    pub min_entries: u64,
    /// Most entries an update may have.
    pub max_entries: u64,
    /// Largest share of a category's entries from this source one update may remove.
    pub shrink_guard: f64,
}

/// `[lists]`' feed settings.
#[derive(Debug, Clone, Default)]
pub struct FeedSettings {
    /// The sources, in policy order.
    pub sources: Vec<FeedSource>,
    /// How often the running proxy updates them itself; `None`: only when asked.
    pub update_every: Option<Duration>,
}

impl FeedSettings {
    /// Checks `[lists]`' `update_every` and `[[lists.sources]]`; every problem goes to
    /// `errors` with its line.
    pub fn compile(
        raw: &RawLists,
        categories: &BTreeMap<Name, RawCategory>,
        base: &Path,
        source: &Source,
        errors: &mut Vec<ConfigError>,
    ) -> FeedSettings {
        let mut invalid = |span: std::ops::Range<usize>, what: String| {
            errors.push(source.error_at(span, ConfigErrorKind::InvalidValue(what)))
        };
        let update_every = raw.update_every.as_ref().and_then(|u| {
            match parse_every(u.get_ref()) {
                Some(d) if d >= MIN_UPDATE_EVERY => Some(d),
                Some(_) => {
                    invalid(u.span(), format!("update_every = {:?}: at least \"5m\"", u.get_ref()));
                    None
                }
                None => {
                    invalid(
                        u.span(),
                        format!(
                            "update_every = {:?}: a number and a unit, e.g. \"30m\", \"6h\", \"1d\"",
                            u.get_ref()
                        ),
                    );
                    None
                }
            }
        });
        let known = || {
            categories
                .keys()
                .map(|k| k.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sources: Vec<FeedSource> = Vec::new();
        for s in &raw.sources {
            let name = s.name.get_ref().clone();
            let mut ok = true;
            if !crate::lists::is_source_name(&name) || name == "sha256" {
                invalid(
                    s.name.span(),
                    format!("source name {name:?}: use lowercase letters, digits, '-' and '_' (and not \"sha256\")"),
                );
                ok = false;
            } else if sources.iter().any(|o| o.name == name) {
                invalid(s.name.span(), format!("source {name:?} is defined twice"));
                ok = false;
            }
            let url = match s.url.get_ref().parse::<http::Uri>() {
                Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => Some(u),
                _ => {
                    invalid(
                        s.url.span(),
                        format!(
                            "url {:?}: an https:// address (feeds are fetched over TLS only)",
                            s.url.get_ref()
                        ),
                    );
                    None
                }
            };
            let format = Format::parse(s.format.get_ref());
            if format.is_none() {
                invalid(
                    s.format.span(),
                    format!(
                        "format {:?}: one of ut1, hosts, plain, e2guardian",
                        s.format.get_ref()
                    ),
                );
            }
            let category = s.category.as_ref().map(|c| c.get_ref().clone());
            match (&format, &s.category) {
                (Some(Format::Ut1), Some(c)) => {
                    invalid(
                        c.span(),
                        "a ut1 source holds many categories: map them with `map`, not `category`"
                            .into(),
                    );
                    ok = false;
                }
                (Some(Format::Ut1), None) | (None, _) => {}
                (Some(f), None) => {
                    invalid(
                        s.name.span(),
                        format!(
                            "source {name:?}: a {} source is one list: say which `category` it fills",
                            f.as_str()
                        ),
                    );
                    ok = false;
                }
                (Some(_), Some(c)) => {
                    if !categories.keys().any(|k| k.get_ref() == c.get_ref()) {
                        invalid(
                            c.span(),
                            format!(
                                "unknown category {:?} (defined categories: {})",
                                c.get_ref(),
                                known()
                            ),
                        );
                        ok = false;
                    }
                }
            }
            if let (Some(m), Some(f)) = (&s.map, format) {
                if f != Format::Ut1 {
                    invalid(m.span(), "`map` is for ut1 sources".into());
                    ok = false;
                }
            }
            let sha256 = s.sha256.as_ref().and_then(|h| {
                let parsed = parse_hex32(h.get_ref());
                if parsed.is_none() {
                    invalid(
                        h.span(),
                        format!("sha256 {:?}: 64 hexadecimal digits", h.get_ref()),
                    );
                }
                parsed
            });
            let shrink_guard = match &s.shrink_guard {
                None => DEFAULT_SHRINK_GUARD,
                Some(g) if (0.0..=1.0).contains(g.get_ref()) => *g.get_ref(),
                Some(g) => {
                    invalid(
                        g.span(),
                        format!(
                            "shrink_guard = {}: a share from 0.0 to 1.0 (0.2: refuse an update that removes over a fifth)",
                            g.get_ref()
                        ),
                    );
                    DEFAULT_SHRINK_GUARD
                }
            };
            let min_entries = s.min_entries.unwrap_or(1);
            let max_entries = s.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
            if min_entries > max_entries {
                invalid(
                    s.name.span(),
                    format!("source {name:?}: min_entries {min_entries} is above max_entries {max_entries}"),
                );
                ok = false;
            }
            let (Some(url), Some(format), true) = (url, format, ok) else {
                continue;
            };
            sources.push(FeedSource {
                name,
                url,
                format,
                category,
                map: s.map.as_ref().map(|m| base.join(m.get_ref())),
                sha256,
                max_bytes: s.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
                min_entries,
                max_entries,
                shrink_guard,
            });
        }
        FeedSettings {
            sources,
            update_every,
        }
    }
}

/// `"30m"`, `"6h"`, `"1d"`, `"90s"`.
fn parse_every(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// What is remembered about one source between updates.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceState {
    /// The `ETag` of the last good fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The `Last-Modified` of the last good fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// SHA-256 (hex) of the last file taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When the lists from this source were last known good (an update or a `304`),
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<i64>,
    /// When the last attempt ended, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<i64>,
    /// How the last attempt went ([`UpdateResult::as_str`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// What the last attempt said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_detail: Option<String>,
    /// Entries per category taken from this source by the last update.
    #[serde(default)]
    pub entries: BTreeMap<String, u64>,
}

/// Every source's state: `<lists.dir>/.feeds/state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FeedState {
    /// By source name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceState>,
}

impl FeedState {
    /// The state file of a lists directory.
    pub fn path(lists_dir: &Path) -> PathBuf {
        lists_dir.join(".feeds").join("state.json")
    }

    /// Reads it; a missing file is an empty state, an unreadable one too (it only
    /// saves a download, and staleness is measured from it, so an update re-creates it).
    pub fn read(lists_dir: &Path) -> FeedState {
        std::fs::read(FeedState::path(lists_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn write(&self, lists_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::lists::write_atomically(&FeedState::path(lists_dir), &text)
    }
}

/// How one source's update went; also the `result` label of
/// `gatehouse_list_updates_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateResult {
    /// New lists were written and load.
    Updated,
    /// The feed has not changed since the last good fetch (`304`).
    NotModified,
    /// What the feed gave was refused: pin, size, entry count, shrink guard, a corrupt
    /// file, or lists that do not load. The lists in force stay.
    Refused,
    /// The feed could not be fetched, or a file could not be written. The lists in
    /// force stay.
    Failed,
}

impl UpdateResult {
    /// Every result, for metrics that should exist at zero.
    pub const ALL: [UpdateResult; 4] = [
        UpdateResult::Updated,
        UpdateResult::NotModified,
        UpdateResult::Refused,
        UpdateResult::Failed,
    ];

    /// Its name in metrics, the state file and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateResult::Updated => "updated",
            UpdateResult::NotModified => "not_modified",
            UpdateResult::Refused => "refused",
            UpdateResult::Failed => "failed",
        }
    }

    /// The lists from this source are current (updated, or known unchanged).
    pub fn is_success(self) -> bool {
        matches!(self, UpdateResult::Updated | UpdateResult::NotModified)
    }
}

/// One source's update.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The source.
    pub source: String,
    /// How it went.
    pub result: UpdateResult,
    /// What happened, for the decision log and the technician: entry counts per
    /// category, or why it was refused.
    pub detail: String,
    /// Entries per category, when updated.
    pub entries: BTreeMap<String, u64>,
}

impl Outcome {
    /// The decision-log text: source, result, detail.
    pub fn log_detail(&self) -> String {
        format!(
            "source {}: {}: {}",
            self.source,
            self.result.as_str(),
            self.detail
        )
    }
}

/// What to update, and on whose say.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this source (default: all).
    pub only: Option<String>,
    /// Take an update that the shrink guard refuses; the reason is logged. Never for an
    /// `illegal` category.
    pub allow_shrink: Option<String>,
    /// Who asked (a token's name, `schedule`, or the CLI's user), for the log.
    pub by: String,
}

/// Why an update could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// `--source` names no source.
    #[error("no source {name:?} in [[lists.sources]] (defined: {known})")]
    UnknownSource {
        /// The name asked for.
        name: String,
        /// The names defined.
        known: String,
    },
    /// There is nothing to update.
    #[error("the policy has no [[lists.sources]]")]
    NoSources,
    /// `[inspection] extra_roots` could not be read.
    #[error("{0}")]
    Roots(#[from] crate::inspection::InspectionError),
    /// A TLS setting could not be made.
    #[error("setting up TLS: {0}")]
    Tls(String),
}

/// Updates the sources `options` names, one after another, on the policy at
/// `policy_path` whose snapshot in force is `snap`. Each source's outcome is its own:
/// one refused feed does not stop the others. The caller swaps the lists in (a reload)
/// if any [`UpdateResult::Updated`].
pub async fn update(
    policy_path: &Path,
    snap: Arc<Snapshot>,
    options: &Options,
) -> Result<Vec<Outcome>, UpdateError> {
    let feeds = &snap.settings.feeds;
    if feeds.sources.is_empty() {
        return Err(UpdateError::NoSources);
    }
    let chosen: Vec<FeedSource> = match &options.only {
        Some(name) => match feeds.sources.iter().find(|s| s.name == *name) {
            Some(s) => vec![s.clone()],
            None => {
                return Err(UpdateError::UnknownSource {
                    name: name.clone(),
                    known: feeds
                        .sources
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        },
        None => feeds.sources.clone(),
    };
    let roots = crate::inspection::upstream_roots(&snap.settings.inspection.extra_roots)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| UpdateError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = Arc::new(tls);
    let lists_dir = snap.policy.lists_dir.clone();
    let mut outcomes = Vec::new();
    for source in chosen {
        let mut state = FeedState::read(&lists_dir);
        let previous = state.sources.get(&source.name).cloned().unwrap_or_default();
        let have_files = previous
            .entries
            .keys()
            .filter_map(|c| category_dir(&snap, c))
            .any(|dir| {
                dir.join(format!("domains.{}", source.name)).exists()
                    || dir.join(format!("urls.{}", source.name)).exists()
            });
        let outcome = match fetch(&source, &previous, have_files, tls.clone()).await {
            Err(why) => Outcome {
                source: source.name.clone(),
                result: UpdateResult::Failed,
                detail: format!("{why}; the lists in force stay"),
                entries: BTreeMap::new(),
            },
            Ok(Fetched::NotModified) => Outcome {
                source: source.name.clone(),
                result: UpdateResult::NotModified,
                detail: format!(
                    "not modified since the last fetch; {}",
                    counts_text(&previous.entries)
                ),
                entries: previous.entries.clone(),
            },
            Ok(Fetched::Body {
                bytes,
                etag,
                last_modified,
            }) => {
                let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
                if source.sha256.is_some_and(|pin| pin != digest) {
                    Outcome {
                        source: source.name.clone(),
                        result: UpdateResult::Refused,
                        detail: format!(
                            "the file's SHA-256 is {}, not the pinned {}; the lists in force stay",
                            hex::encode(digest),
                            hex::encode(source.sha256.unwrap_or_default())
                        ),
                        entries: BTreeMap::new(),
                    }
                } else if have_files && previous.sha256.as_deref() == Some(&hex::encode(digest)) {
                    // A server without validators sent the file already taken.
                    Outcome {
                        source: source.name.clone(),
                        result: UpdateResult::NotModified,
                        detail: format!(
                            "the same file as the last update (SHA-256 {}); {}",
                            hex::encode(digest),
                            counts_text(&previous.entries)
                        ),
                        entries: previous.entries.clone(),
                    }
                } else {
                    let (path, snap2, src, opts) = (
                        policy_path.to_path_buf(),
                        snap.clone(),
                        source.clone(),
                        options.clone(),
                    );
                    let applied = tokio::task::spawn_blocking(move || {
                        apply(&path, &snap2, &src, bytes, &opts)
                    })
                    .await
                    .unwrap_or_else(|e| Outcome {
                        source: source.name.clone(),
                        result: UpdateResult::Failed,
                        detail: format!("the update task failed: {e}; the lists in force stay"),
                        entries: BTreeMap::new(),
                    });
                    if applied.result == UpdateResult::Updated {
                        let entry = state.sources.entry(source.name.clone()).or_default();
                        entry.etag = etag;
                        entry.last_modified = last_modified;
                        entry.sha256 = Some(hex::encode(digest));
                    }
                    applied
                }
            }
        };
        let now = chrono::Utc::now().timestamp();
        let entry = state.sources.entry(source.name.clone()).or_default();
        entry.last_attempt = Some(now);
        entry.last_result = Some(outcome.result.as_str().to_string());
        entry.last_detail = Some(outcome.detail.clone());
        if outcome.result.is_success() {
            entry.last_success = Some(now);
            entry.entries = outcome.entries.clone();
        }
        if let Err(e) = state.write(&lists_dir) {
            tracing::warn!(error = %e, "cannot write the list feeds' state file");
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn category_dir(snap: &Snapshot, name: &str) -> Option<PathBuf> {
    snap.policy
        .categories()
        .find(|(_, d)| d.category.name.as_str() == name)
        .map(|(_, d)| d.list_dir.clone())
}

fn counts_text(entries: &BTreeMap<String, u64>) -> String {
    if entries.is_empty() {
        return "no entries".into();
    }
    entries
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

enum Fetched {
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// Fetches the source's URL, following a few `https://` redirects; the whole exchange
/// within [`FETCH_TIMEOUT`].
async fn fetch(
    source: &FeedSource,
    previous: &SourceState,
    have_files: bool,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Fetched, String> {
    let exchange = async {
        let mut url = source.url.clone();
        for _ in 0..=MAX_REDIRECTS {
            match fetch_once(source, &url, previous, have_files, tls.clone()).await? {
                Step::Done(f) => return Ok(f),
                Step::Redirect(next) => url = next,
            }
        }
        Err(format!(
            "{}: more than {MAX_REDIRECTS} redirects",
            source.url
        ))
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            format!(
                "{}: not fetched within {} s",
                source.url,
                FETCH_TIMEOUT.as_secs()
            )
        })?
}

enum Step {
    Done(Fetched),
    Redirect(http::Uri),
}

async fn fetch_once(
    source: &FeedSource,
    url: &http::Uri,
    previous: &SourceState,
    have_files: bool,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Step, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{url}: {what}: {e}");
    let host = url
        .host()
        .ok_or_else(|| format!("{url}: no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port_u16().unwrap_or(443);
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| format!("{url}: connection timed out"))?
    .map_err(|e| fail("cannot connect", &e))?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| fail("not a server name", &e))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| fail("TLS", &e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| fail("HTTP", &e))?;
    tokio::spawn(conn);
    let authority = url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| host.clone());
    let mut request = http::Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(
            http::header::USER_AGENT,
            concat!("gatehouse/", env!("CARGO_PKG_VERSION"), " (list feeds)"),
        );
    // Validators only while the lists they describe are still on disk: otherwise a 304
    // would leave a source whose files were deleted without its entries.
    if have_files && url == &source.url {
        if let Some(etag) = &previous.etag {
            request = request.header(http::header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &previous.last_modified {
            request = request.header(http::header::IF_MODIFIED_SINCE, lm);
        }
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| fail("request", &e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| fail("HTTP", &e))?;
    let status = response.status();
    let header = |name: http::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if status == http::StatusCode::NOT_MODIFIED {
        return Ok(Step::Done(Fetched::NotModified));
    }
    if status.is_redirection() {
        let location = header(http::header::LOCATION)
            .ok_or_else(|| format!("{url}: {status} without Location"))?;
        let next = resolve(url, &location).ok_or_else(|| {
            format!("{url}: redirected to {location:?}, which is not an https:// address")
        })?;
        return Ok(Step::Redirect(next));
    }
    if !status.is_success() {
        return Err(format!("{url}: the server answered {status}"));
    }
    if let Some(length) = header(http::header::CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok()) {
        if length > source.max_bytes {
            return Err(too_big(url, source.max_bytes));
        }
    }
    let etag = header(http::header::ETAG);
    let last_modified = header(http::header::LAST_MODIFIED);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    // Counted as it arrives: a server that sends more than it announced (or announces
    // nothing) is cut off at the bound, not after filling the disk or memory.
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| fail("reading the body", &e))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() as u64 + data.len() as u64 > source.max_bytes {
                return Err(too_big(url, source.max_bytes));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Step::Done(Fetched::Body {
        bytes,
        etag,
        last_modified,
    }))
}

fn too_big(url: &http::Uri, max: u64) -> String {
    format!("{url}: larger than max_bytes ({max} bytes); nothing was taken")
}

/// A redirect's `Location` against the URL that gave it; `https://` only.
fn resolve(base: &http::Uri, location: &str) -> Option<http::Uri> {
    let base = url::Url::parse(&base.to_string()).ok()?;
    let next = base.join(location).ok()?;
    (next.scheme() == "https")
        .then(|| next.as_str().parse().ok())
        .flatten()
}

/// Reads, checks, writes and compiles one fetched file. Blocking.
fn apply(
    policy_path: &Path,
    snap: &Snapshot,
    source: &FeedSource,
    bytes: Vec<u8>,
    options: &Options,
) -> Outcome {
    let outcome = |result: UpdateResult, detail: String| Outcome {
        source: source.name.clone(),
        result,
        detail,
        entries: BTreeMap::new(),
    };
    let lists_dir = &snap.policy.lists_dir;
    let download = lists_dir
        .join(".feeds")
        .join(format!("{}.download", source.name));
    if let Err(e) = crate::lists::write_atomically(&download, &bytes) {
        return outcome(
            UpdateResult::Failed,
            format!(
                "cannot write {}: {e}; the lists in force stay",
                download.display()
            ),
        );
    }
    drop(bytes);
    let result = apply_file(policy_path, snap, source, &download, options);
    let _ = std::fs::remove_file(&download);
    match result {
        Ok((detail, entries)) => Outcome {
            source: source.name.clone(),
            result: UpdateResult::Updated,
            detail,
            entries,
        },
        Err((result, detail)) => outcome(result, format!("{detail}; the lists in force stay")),
    }
}

type Applied = Result<(String, BTreeMap<String, u64>), (UpdateResult, String)>;

fn apply_file(
    policy_path: &Path,
    snap: &Snapshot,
    source: &FeedSource,
    download: &Path,
    options: &Options,
) -> Applied {
    let refused = |why: String| (UpdateResult::Refused, why);
    let map = match (source.format, &source.map) {
        (Format::Ut1, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| refused(format!("cannot read the UT1 map {}: {e}", path.display())))?;
            feed::parse_ut1_map(&text).map_err(|e| refused(format!("{}:{e}", path.display())))?
        }
        (Format::Ut1, None) => feed::parse_ut1_map(feed::DEFAULT_UT1_MAP)
            .map_err(|e| refused(format!("the built-in UT1 map:{e}")))?,
        _ => BTreeMap::new(),
    };
    let categories: BTreeMap<String, PathBuf> = snap
        .policy
        .categories()
        .map(|(_, d)| (d.category.name.to_string(), d.list_dir.clone()))
        .collect();
    let illegal: Vec<String> = snap
        .policy
        .categories()
        .filter(|(_, d)| d.category.severity == Severity::Illegal)
        .map(|(_, d)| d.category.name.to_string())
        .collect();
    let mut request = crate::import::Request {
        format: source.format,
        source: download.to_path_buf(),
        category: source.category.clone(),
        map,
        own_map: source.map.is_some(),
        name: source.name.clone(),
        categories: categories.clone(),
        dry_run: true,
        origin: Some(format!(
            "`gatehouse lists update` (source {}, {} from {})",
            source.name,
            source.format.as_str(),
            source.url
        )),
    };
    // Read and count first: nothing is written unless the whole file reads and passes.
    let counted = crate::import::run(&request).map_err(|e| refused(e.to_string()))?;
    let entries: BTreeMap<String, u64> = counted
        .written
        .iter()
        .map(|(c, (d, u, _))| (c.clone(), (*d + *u) as u64))
        .collect();
    let total: u64 = entries.values().sum();
    if total < source.min_entries {
        return Err(refused(format!(
            "{total} entries, fewer than min_entries {} (an empty or truncated feed)",
            source.min_entries
        )));
    }
    if total > source.max_entries {
        return Err(refused(format!(
            "{total} entries, more than max_entries {}",
            source.max_entries
        )));
    }
    let mut shrunk = Vec::new();
    for (category, &new) in &entries {
        let Some(dir) = categories.get(category) else {
            continue;
        };
        let old = entries_in(&dir.join(format!("domains.{}", source.name)))
            + entries_in(&dir.join(format!("urls.{}", source.name)));
        if old > 0 && new < old && (old - new) as f64 / old as f64 > source.shrink_guard {
            shrunk.push((category.clone(), old, new));
        }
    }
    let mut override_note = String::new();
    if !shrunk.is_empty() {
        let text = shrunk
            .iter()
            .map(|(c, old, new)| {
                format!(
                    "{c} {old} → {new} (−{:.0}%)",
                    (old - new) as f64 * 100.0 / *old as f64
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let guard = format!("{:.0}%", source.shrink_guard * 100.0);
        let illegal_hit: Vec<&str> = shrunk
            .iter()
            .filter(|(c, _, _)| illegal.contains(c))
            .map(|(c, _, _)| c.as_str())
            .collect();
        if !illegal_hit.is_empty() {
            // Illegal-content lists cannot be altered by anyone at the school (UKSIC): a
            // large cut of one is the provider's to confirm, never a local override.
            return Err(refused(format!(
                "shrink guard: {text}, more than {guard} removed; {} illegal, so no override can take it (ask the list's provider; the staleness alert fires until it is resolved)",
                illegal_hit.join(", ")
            )));
        }
        match &options.allow_shrink {
            None => {
                return Err(refused(format!(
                    "shrink guard: {text}, more than {guard} removed (take it with --allow-shrink --reason TEXT if it is genuine)"
                )))
            }
            Some(reason) => {
                override_note = format!(
                    "; shrink guard overridden by {} ({text}): {reason}",
                    options.by
                );
            }
        }
    }
    // Keep what is there, to put back if the new lists do not load.
    let mut backups: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
    for category in entries.keys() {
        if let Some(dir) = categories.get(category) {
            for kind in ["domains", "urls"] {
                let path = dir.join(format!("{kind}.{}", source.name));
                backups.push((path.clone(), std::fs::read(&path).ok()));
            }
        }
    }
    let restore = |backups: &[(PathBuf, Option<Vec<u8>>)]| {
        for (path, old) in backups {
            let result = match old {
                Some(bytes) => crate::lists::write_atomically(path, bytes),
                None => match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            if let Err(e) = result {
                tracing::error!(file = %path.display(), error = %e, "cannot put a list file back after a failed feed update");
            }
        }
    };
    request.dry_run = false;
    if let Err(e) = crate::import::run(&request) {
        restore(&backups);
        return Err((UpdateResult::Failed, e.to_string()));
    }
    // The start-up path, whole: policy, every list, the illegal lists' fail-closed
    // check, the grants against the new lists. It writes the compiled cache, so the
    // caller's reload reads it instead of compiling again.
    if let Err(errors) = crate::snapshot::load(policy_path, CacheMode::Rebuild) {
        restore(&backups);
        let _ = crate::snapshot::load(policy_path, CacheMode::Rebuild);
        return Err(refused(format!("the new lists do not load: {errors}")));
    }
    let detail = format!(
        "{} entries: {}{override_note} (by {})",
        total,
        counts_text(&entries),
        options.by
    );
    Ok((detail, entries))
}

/// Entry lines (not comments or blanks) of a list file; 0 if there is none.
fn entries_in(path: &Path) -> u64 {
    match std::fs::read(path) {
        Ok(bytes) => bytes
            .split(|&b| b == b'\n')
            .filter(|l| {
                let l = l.trim_ascii();
                !l.is_empty() && l[0] != b'#'
            })
            .count() as u64,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parses() {
        for (text, secs) in [
            ("30m", Some(1800)),
            ("6h", Some(21600)),
            ("1d", Some(86400)),
            ("90s", Some(90)),
            (" 2 h", Some(7200)),
            ("h", None),
            ("6 weeks", None),
            ("", None),
        ] {
            assert_eq!(parse_every(text).map(|d| d.as_secs()), secs, "{text:?}");
        }
    }

    #[test]
    fn redirects_stay_on_https() {
        let base: http::Uri = "https://feeds.test/lists/ut1.tar.gz".parse().expect("uri");
        assert_eq!(
            resolve(&base, "/v2/ut1.tar.gz").map(|u| u.to_string()),
            Some("https://feeds.test/v2/ut1.tar.gz".into())
        );
        assert_eq!(resolve(&base, "http://feeds.test/x"), None);
    }

    fn compile(text: &str) -> (FeedSettings, Vec<String>) {
        let source = Source::new(Path::new("p.toml"), text);
        #[derive(Deserialize)]
        struct Doc {
            lists: RawLists,
            #[serde(default)]
            categories: BTreeMap<Name, RawCategory>,
        }
        let doc: Doc = source.parse(text).expect("parses");
        let mut errors = Vec::new();
        let s = FeedSettings::compile(
            &doc.lists,
            &doc.categories,
            Path::new("/etc/gh"),
            &source,
            &mut errors,
        );
        (s, errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn sources_are_checked_with_lines() {
        let (s, errors) = compile(
            "[lists]\nupdate_every = \"6h\"\n[[lists.sources]]\nname = \"ut1\"\nurl = \"https://dsi.ut-capitole.fr/blacklists/download/blacklists.tar.gz\"\nformat = \"ut1\"\n[categories.gambling]\nseverity = \"productivity\"\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.update_every, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(s.sources.len(), 1);
        assert_eq!(s.sources[0].shrink_guard, DEFAULT_SHRINK_GUARD);
        let (s, errors) = compile(
            "[lists]\nupdate_every = \"1m\"\n[[lists.sources]]\nname = \"Bad Name\"\nurl = \"http://x.test/a\"\nformat = \"csv\"\n[[lists.sources]]\nname = \"h\"\nurl = \"https://x.test/h\"\nformat = \"hosts\"\ncategory = \"nope\"\nshrink_guard = 2.0\nsha256 = \"abc\"\n[categories.gambling]\nseverity = \"productivity\"\n",
        );
        assert!(s.sources.is_empty());
        for want in [
            "p.toml:2: update_every = \"1m\"",
            "p.toml:4: source name \"Bad Name\"",
            "p.toml:5: url \"http://x.test/a\"",
            "p.toml:6: format \"csv\"",
            "p.toml:11: unknown category \"nope\"",
            "p.toml:12: shrink_guard = 2",
            "p.toml:13: sha256 \"abc\"",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(want)),
                "{want} not in {errors:#?}"
            );
        }
    }
}
