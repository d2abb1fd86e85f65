//! The policy file as written: raw TOML structures with source positions.
//!
//! This module only *parses* (serde, `deny_unknown_fields`, so a misspelt key is an error
//! rather than a silently ignored setting). Meaning — which names exist, what may be
//! allowed — is checked when [`crate::core::policy`] compiles these structures, using the spans
//! kept here to name the file and line of every problem.
//!
//! Pure: it parses text handed to it; reading the file is the caller's job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// One problem in a configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file with the problem.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: ConfigErrorKind,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.kind),
            None => write!(f, "{}: {}", self.file.display(), self.kind),
        }
    }
}

/// What is wrong, one variant per kind of fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(String),
    /// TOML syntax or a field of the wrong type or name.
    #[error("{0}")]
    Syntax(String),
    /// A category name that the policy does not define.
    #[error("unknown category {name:?} (defined categories: {known})")]
    UnknownCategory {
        /// The name used.
        name: String,
        /// The names defined, for the message.
        known: String,
    },
    /// A schedule name that the policy does not define.
    #[error("unknown schedule {name:?} (defined schedules: {known})")]
    UnknownSchedule {
        /// The name used.
        name: String,
        /// The names defined.
        known: String,
    },
    /// A group name that the policy does not define.
    #[error("unknown group {name:?} (defined groups: {known})")]
    UnknownGroup {
        /// The name used.
        name: String,
        /// The names defined.
        known: String,
    },
    /// An attempt to let a group reach an `illegal` category.
    #[error("{0}")]
    IllegalAllowed(String),
    /// The same thing said twice, or two settings that contradict each other.
    #[error("{0}")]
    Duplicate(String),
    /// A value that is out of range or malformed.
    #[error("{0}")]
    InvalidValue(String),
    /// A category list that could not be read or compiled.
    #[error("{0}")]
    List(String),
    /// The school CA's certificate is missing or unusable where a setting needs it.
    #[error("{0}")]
    Ca(String),
}

/// Every problem found in one pass, so a technician can fix them all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Turns byte offsets into line numbers for one file's text.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file's path, as given.
    pub path: PathBuf,
    line_starts: Vec<usize>,
}

impl Source {
    /// Indexes `text`, read from `path`.
    pub fn new(path: &Path, text: &str) -> Source {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            path: path.to_path_buf(),
            line_starts,
        }
    }

    /// The 1-based line holding byte `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// An error at the start of `span`.
    pub fn error_at(&self, span: std::ops::Range<usize>, kind: ConfigErrorKind) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: Some(self.line_of(span.start)),
            kind,
        }
    }

    /// An error with no particular line.
    pub fn error(&self, kind: ConfigErrorKind) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: None,
            kind,
        }
    }

    /// Parses `text` as `T`, turning a TOML error into a [`ConfigError`] with its line.
    pub fn parse<T: serde::de::DeserializeOwned>(&self, text: &str) -> Result<T, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| self.line_of(s.start));
            ConfigError {
                file: self.path.clone(),
                line,
                kind: ConfigErrorKind::Syntax(e.message().trim().replace('\n', ": ")),
            }
        })
    }
}

/// A spanned string, the type of every name that refers to something else.
pub type Name = Spanned<String>;

/// The whole policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Who this policy is for.
    pub school: RawSchool,
    /// Where category lists live.
    #[serde(default)]
    pub lists: RawLists,
    /// Category definitions, by name.
    #[serde(default)]
    pub categories: BTreeMap<Name, RawCategory>,
    /// Named weekly time windows.
    #[serde(default)]
    pub schedules: BTreeMap<Name, RawSchedule>,
    /// How requesters are put into groups.
    pub identity: RawIdentity,
    /// Filtering levels, by name.
    #[serde(default)]
    pub groups: BTreeMap<Name, RawGroup>,
    /// The proxy listener and its limits.
    #[serde(default)]
    pub server: RawServer,
    /// The decision log.
    #[serde(default)]
    pub log: RawLog,
    /// Grants: where they are and the rules they must follow.
    #[serde(default)]
    pub grants: RawGrantRules,
    /// The admin listener.
    #[serde(default)]
    pub admin: RawAdmin,
    /// The school CA and its enrolment listener.
    #[serde(default)]
    pub inspection: RawInspection,
    /// Safe search: the engine table (the shipped defaults, changed or added to).
    #[serde(default)]
    pub safe_search: RawSafeSearch,
    /// Where safeguarding alerts go (a shell setting: `crate::alerts::settings`).
    #[serde(default)]
    pub alerts: RawAlerts,
    /// Teachers' lesson controls: classrooms, the lesson schedule, the longest override.
    #[serde(default)]
    pub teachers: RawTeachers,
    /// The proxy auto-configuration script served to browsers (`super::pac`).
    pub pac: Option<RawPac>,
    /// Transparent mode's listeners, for traffic redirected by the firewall (a shell
    /// setting: `crate::settings::TransparentSettings`).
    #[serde(default)]
    pub transparent: RawTransparent,
    /// The web console on the admin listener (compiled by the shell's
    /// `proxy::console::settings`).
    #[serde(default)]
    pub console: RawConsole,
}

/// `[transparent]`: listeners for connections the firewall redirects to Gatehouse
/// (devices with no proxy settings).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTransparent {
    /// Where redirected port-80 connections arrive (plain HTTP, decided on `Host`).
    pub http_listen: Option<Spanned<String>>,
    /// Where redirected port-443 connections arrive (TLS, decided on the SNI).
    pub https_listen: Option<Spanned<String>>,
}

/// `[console]`: the web console's sign-in, sessions and lockout; every field optional.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    /// Serve `/console/` on the admin listener (default true when an account or a
    /// directory rule is configured).
    pub enabled: Option<bool>,
    /// Minutes a session lasts from sign-in (default 480: a school day).
    pub session_minutes: Option<Spanned<u32>>,
    /// Failed sign-ins that lock an account or an address (default 5).
    pub lockout_failures: Option<Spanned<u32>>,
    /// Minutes the failures are counted over, and the lock lasts (default 15).
    pub lockout_minutes: Option<Spanned<u32>>,
    /// Local accounts.
    #[serde(default)]
    pub accounts: Vec<RawConsoleAccount>,
    /// Directory groups whose members may sign in, and the role they get.
    #[serde(default)]
    pub directory: Vec<RawConsoleDirectory>,
}

/// `[[console.accounts]]`: what `gatehouse console passwd` prints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsoleAccount {
    /// The account name typed at sign-in (and recorded with every action).
    pub name: Spanned<String>,
    /// `dsl`, `technician`, `teacher`, `it-lead` or `viewer`.
    pub role: Spanned<String>,
    /// The argon2 PHC string of the password.
    pub hash: Spanned<String>,
}

/// `[[console.directory]]`: a directory group whose members get a console role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsoleDirectory {
    /// The directory group: a DN, or a CN.
    pub group: Spanned<String>,
    /// The console role its members get.
    pub role: Spanned<String>,
}

/// `[teachers]`: what a teacher's lesson block or allow may reach.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTeachers {
    /// The schedule whose windows are lessons (default `lessons`, if the policy has one).
    pub lessons: Option<Name>,
    /// The longest a lesson override may last, in minutes (default 60).
    pub max_minutes: Option<Spanned<u32>>,
    /// Classrooms by name: the client networks of each room's devices.
    #[serde(default)]
    pub classrooms: BTreeMap<Name, RawClassroom>,
    /// Directory groups whose members are teachers, and what they may act for.
    #[serde(default)]
    pub directory: Vec<RawTeacherGroup>,
}

/// `[[teachers.directory]]`: members of a directory group act as teachers (signing in
/// to the admin API with their directory account) for these classrooms and groups.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeacherGroup {
    /// The directory group: a DN, or a CN (any group of that name).
    pub directory: Spanned<String>,
    /// Classrooms its members may act for.
    #[serde(default)]
    pub classrooms: Vec<Name>,
    /// Groups (classes) its members may act for.
    #[serde(default)]
    pub groups: Vec<Name>,
}

/// `[teachers.classrooms.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassroom {
    /// The room's client networks (CIDR).
    pub subnets: Vec<Spanned<String>>,
    /// What the room is, for people.
    #[serde(default)]
    pub description: String,
}

/// `[pac]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPac {
    /// The proxies browsers use, `host:port`, in the order they try them.
    #[serde(default)]
    pub proxies: Vec<Spanned<String>>,
    /// Domains reached directly, with their subdomains (`school.internal`).
    #[serde(default)]
    pub direct_domains: Vec<Spanned<String>>,
    /// IPv4 networks reached directly when a URL names an address in them.
    #[serde(default)]
    pub direct_networks: Vec<Spanned<String>>,
    /// Single-label names (`http://intranet/`) go direct. Default true.
    pub direct_plain_hostnames: Option<bool>,
    /// Go direct when every proxy is down. Default false.
    pub fallback_direct: Option<bool>,
}

/// `[inspection]`: every field optional; defaults in the shell's
/// `settings::InspectionSettings`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawInspection {
    /// The school CA's certificate, relative to the policy.
    pub ca_cert: Option<String>,
    /// The school CA's private key, relative to the policy.
    pub ca_key: Option<String>,
    /// Plain-HTTP listen address where devices download the CA certificate.
    pub enrol_listen: Option<Spanned<String>>,
    /// Categories whose sites are never inspected (banking, health, support services).
    #[serde(default)]
    pub never_inspect_categories: Vec<Name>,
    /// Sites (domains or host/path prefixes) never inspected.
    #[serde(default)]
    pub never_inspect_sites: Vec<Spanned<String>>,
    /// Extra CA certificates (PEM files, relative to the policy) trusted for upstream
    /// servers of inspected tunnels, beside the public roots.
    #[serde(default)]
    pub extra_roots: Vec<String>,
    /// Minted leaf certificates kept (default 10 000).
    pub leaf_cache_size: Option<Spanned<usize>>,
    /// Hours a minted leaf certificate is valid (default 24).
    pub leaf_validity_hours: Option<Spanned<u64>>,
}

/// `[safe_search]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSafeSearch {
    /// Engines by name: a shipped engine's name changes the fields given; a new name
    /// adds an engine.
    #[serde(default)]
    pub engines: BTreeMap<Name, RawEngine>,
}

/// `[safe_search.engines.NAME]`: every field optional for a shipped engine (the rest
/// keep their defaults); `setting`, `hosts` and `strict` required for a new one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    /// `"safe_search"` or `"youtube_restrict"`: the group setting that turns it on.
    pub setting: Option<Spanned<String>>,
    /// Host names (`www.bing.com`) or a name and `.*` (`www.google.*`).
    pub hosts: Option<Vec<Spanned<String>>>,
    /// The name dialled for strict.
    pub strict: Option<Spanned<String>>,
    /// The name dialled for moderate (`youtube_restrict` engines only).
    pub moderate: Option<Spanned<String>>,
}

/// `[alerts]`: every field optional; defaults and checks in the shell's
/// `alerts::settings`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// The outbox directory, relative to the policy.
    pub outbox: Option<String>,
    /// Alerts that may wait for the alert task before one is dropped.
    pub queue: Option<usize>,
    /// Seconds an alert waits for more attempts before it goes (below 10).
    pub gather_secs: Option<Spanned<u64>>,
    /// Minutes in which attempts by one person on one category make one alert.
    pub collapse_minutes: Option<u64>,
    /// Most alerts sent in one minute, over all people and categories.
    pub max_per_minute: Option<u32>,
    /// Seconds before the first retry of a failed send.
    pub retry_initial_secs: Option<u64>,
    /// The longest wait between retries, in seconds.
    pub retry_max_secs: Option<u64>,
    /// `"hourly"` or `"daily"`: how often the digest email goes.
    pub digest: Option<Spanned<String>>,
    /// The SMTP channel.
    pub email: Option<RawAlertEmail>,
    /// The webhook channel.
    pub webhook: Option<RawAlertWebhook>,
}

/// `[alerts.email]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertEmail {
    /// SMTP server host name.
    pub server: Spanned<String>,
    /// Port (default 587 for STARTTLS, 465 for `tls`, 25 for `none`).
    pub port: Option<u16>,
    /// `"starttls"` (default), `"tls"`, or `"none"` (a local relay only).
    pub tls: Option<Spanned<String>>,
    /// The sender address.
    pub from: Spanned<String>,
    /// The recipients (the DSL and deputies).
    pub to: Vec<Spanned<String>>,
    /// SMTP user name, if the server wants one.
    pub username: Option<String>,
    /// A file holding the SMTP password, relative to the policy.
    pub password_file: Option<Spanned<String>>,
    /// A PEM file of CA certificates to trust besides the public roots (a relay with a
    /// certificate from the school's or the trust's own CA).
    pub ca_file: Option<Spanned<String>>,
}

/// `[alerts.webhook]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertWebhook {
    /// `http://` or `https://` URL that receives the JSON.
    pub url: Spanned<String>,
    /// A file holding the shared secret for the signature, relative to the policy.
    pub secret_file: Option<Spanned<String>>,
    /// The shared secret itself (prefer `secret_file`: the policy is often readable).
    pub secret: Option<Spanned<String>>,
    /// A PEM file of CA certificates to trust besides the public roots, for an https
    /// receiver with a certificate from the school's own CA.
    pub ca_file: Option<Spanned<String>>,
}

/// `[admin]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Admin listen address (default loopback).
    pub listen: Option<Spanned<String>>,
    /// API tokens, stored as hashes.
    #[serde(default)]
    pub tokens: Vec<RawToken>,
    /// Certificate chain (PEM) to serve the admin listener over TLS (with `tls_key`).
    pub tls_cert: Option<Spanned<String>>,
    /// Private key (PEM) for `tls_cert`.
    pub tls_key: Option<Spanned<String>>,
}

/// `[[admin.tokens]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// Whose token (the technician or integration); recorded with every call.
    pub name: Spanned<String>,
    /// `technician` (may change grants), `viewer` (may read), `teacher` (lesson
    /// overrides for its classrooms and groups) or `dsl` (acknowledges alerts).
    pub role: Spanned<String>,
    /// Hex SHA-256 of the token.
    pub sha256: Spanned<String>,
    /// For a teacher: the classrooms (`[teachers.classrooms]`) it may act for.
    #[serde(default)]
    pub classrooms: Vec<Name>,
    /// For a teacher: the groups (classes) it may act for.
    #[serde(default)]
    pub groups: Vec<Name>,
}

/// `[grants]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGrantRules {
    /// The grants file, relative to the policy.
    pub file: Option<String>,
    /// A regular expression every ticket must match.
    pub ticket_pattern: Option<Spanned<String>>,
    /// The longest a grant may last, in days.
    pub max_days: Option<u32>,
    /// Where grants live: `file` (the default, one node) or `etcd` (several nodes).
    pub store: Option<Spanned<String>>,
    /// `[grants.etcd]`: the etcd cluster, for `store = "etcd"`.
    pub etcd: Option<RawEtcd>,
}

/// `[grants.etcd]`: every field but `endpoints` optional; defaults in the shell's
/// `settings::EtcdSettings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    /// `http://HOST:PORT` or `https://HOST:PORT`, one per cluster member.
    pub endpoints: Spanned<Vec<Spanned<String>>>,
    /// The key prefix the grants live under.
    pub prefix: Option<Spanned<String>>,
    /// The CA that signed the members' certificates (PEM).
    pub ca_file: Option<Spanned<String>>,
    /// A client certificate (PEM), for clusters that ask for one.
    pub cert_file: Option<Spanned<String>>,
    /// Its key (PEM).
    pub key_file: Option<Spanned<String>>,
    /// An etcd user, for clusters with authentication on.
    pub user: Option<Spanned<String>>,
    /// A file holding that user's password.
    pub password_file: Option<Spanned<String>>,
    /// How long to wait for a connection, in milliseconds.
    pub dial_timeout_ms: Option<u64>,
    /// How long to wait for an answer, in milliseconds.
    pub request_timeout_ms: Option<u64>,
}

/// `[log]`: every field optional; defaults in the shell's `settings::LogSettings`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// Directory of segments.
    pub dir: Option<String>,
    /// This node's name.
    pub node: Option<String>,
    /// Milliseconds between fsyncs.
    pub fsync_interval_ms: Option<u64>,
    /// Segment size in MiB.
    pub segment_mib: Option<u64>,
    /// Days to keep; 0 keeps everything.
    pub retention_days: Option<u32>,
    /// Entries that may wait for the writer.
    pub queue: Option<usize>,
    /// Accepted so that older policies still load; no longer used. Entries are written
    /// by the requests themselves (group commit), so none waits for room: past `queue`
    /// entries waiting, a record is refused at once and counted lost.
    pub queue_timeout_ms: Option<u64>,
}

/// `[server]`: every field optional; defaults are in the shell's `settings::ServerSettings`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Proxy listen address.
    pub listen: Option<Spanned<String>>,
    /// Largest request head in bytes.
    pub max_header_bytes: Option<usize>,
    /// Most header fields in a request.
    pub max_headers: Option<usize>,
    /// Longest request target in bytes.
    pub max_uri_bytes: Option<usize>,
    /// Seconds to receive a request head.
    pub head_timeout_secs: Option<u64>,
    /// Seconds a keep-alive connection may be idle.
    pub idle_timeout_secs: Option<u64>,
    /// Seconds without progress receiving a request body.
    pub body_idle_timeout_secs: Option<u64>,
    /// Seconds a write to the client may stall.
    pub write_idle_timeout_secs: Option<u64>,
    /// Seconds to connect upstream.
    pub connect_timeout_secs: Option<u64>,
    /// Seconds to wait for an upstream's response head.
    pub upstream_timeout_secs: Option<u64>,
    /// Seconds a tunnel may be idle.
    pub tunnel_idle_timeout_secs: Option<u64>,
    /// Longest life of a tunnel, in seconds.
    pub tunnel_max_lifetime_secs: Option<u64>,
    /// Seconds to wait for a ClientHello in a tunnel.
    pub client_hello_timeout_secs: Option<u64>,
    /// Most client connections at once (0: derived from the file-descriptor limit).
    pub max_connections: Option<usize>,
    /// Most connections from one client address.
    pub max_connections_per_client: Option<usize>,
    /// Ports CONNECT may reach.
    pub tunnel_ports: Option<Vec<u16>>,
    /// Destination networks allowed although internal (CIDRs).
    pub allow_internal_destinations: Option<Vec<Spanned<String>>>,
    /// Seconds to let requests finish at shutdown.
    pub shutdown_grace_secs: Option<u64>,
    /// Reload when the policy, users file or lists change, as SIGHUP does.
    pub reload_on_change: Option<bool>,
    /// Static name → address overrides.
    #[serde(default)]
    pub resolve: BTreeMap<String, Spanned<String>>,
}

/// `[school]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchool {
    /// School or trust name, for the block page and the report.
    pub name: String,
    /// Default time zone for schedules and reports.
    #[serde(default = "default_timezone")]
    pub timezone: Spanned<String>,
}

fn default_timezone() -> Spanned<String> {
    Spanned::new(0..0, "Europe/London".to_string())
}

/// `[lists]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLists {
    /// Directory holding `<category>/domains|urls|expressions|search_terms`.
    pub dir: Option<String>,
    /// Where the compiled domain index is cached.
    pub cache: Option<String>,
    /// How often the running proxy updates the feeds itself (`"6h"`); default never.
    pub update_every: Option<Spanned<String>>,
    /// Feeds fetched by `gatehouse lists update` (`[[lists.sources]]`).
    #[serde(default)]
    pub sources: Vec<RawListSource>,
}

/// `[[lists.sources]]`: a list feed fetched over HTTPS and imported like `lists import`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListSource {
    /// Its name: the suffix of the files it writes (`domains.<name>`), and its label.
    pub name: Spanned<String>,
    /// Where it is fetched from (`https://`).
    pub url: Spanned<String>,
    /// `ut1`, `hosts`, `plain` or `e2guardian`.
    pub format: Spanned<String>,
    /// For the single-list formats: the category it fills.
    pub category: Option<Name>,
    /// For `ut1`: a map file (UT1 category → policy category); default the built-in map.
    pub map: Option<Spanned<String>>,
    /// SHA-256 (hex) the fetched file must have.
    pub sha256: Option<Spanned<String>>,
    /// Most bytes fetched.
    pub max_bytes: Option<u64>,
    /// Fewest entries an update may have.
    pub min_entries: Option<u64>,
    /// Most entries an update may have.
    pub max_entries: Option<u64>,
    /// Largest share of a category's entries from this source an update may remove.
    pub shrink_guard: Option<Spanned<f64>>,
}

/// `[categories.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCategory {
    /// How serious the category is.
    pub severity: Spanned<String>,
    /// What belongs in it.
    #[serde(default)]
    pub description: String,
    /// Directory of this category's lists, instead of `<lists.dir>/<name>`.
    pub list: Option<String>,
    /// What the block page says about this category (the list provider's splash text).
    pub block_message: Option<String>,
    /// `"immediate"`, `"digest"` or `"none"`: whether an attempt on it alerts the DSL.
    pub alert: Option<Spanned<String>>,
    /// As `alert`, for a match of this category's search terms (default: `alert`).
    pub term_alert: Option<Spanned<String>>,
    /// Alert on an allowed visit too, not only on a block.
    #[serde(default)]
    pub alert_on_allow: bool,
    /// Teachers' lesson overrides may not name it (illegal categories are always so).
    #[serde(default)]
    pub locked: bool,
}

/// `[schedules.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// Time zone, default the school's.
    pub timezone: Option<Spanned<String>>,
    /// Windows like `"Mon-Fri 10:30-10:45"`.
    pub windows: Vec<Spanned<String>>,
}

/// `[identity]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// Group for clients that match no subnet and did not authenticate.
    pub default_group: Name,
    /// Users file: proxy-authenticated users and their groups.
    pub users_file: Option<String>,
    /// Source subnets and their groups.
    #[serde(default)]
    pub subnets: Vec<RawSubnet>,
    /// The school's directory (LDAP / Active Directory): sign-in and groups.
    pub directory: Option<RawDirectory>,
    /// Device names by address or subnet, recorded with every decision.
    #[serde(default)]
    pub devices: Vec<RawDevice>,
    /// Device names by reverse DNS (PTR) for addresses `devices` does not name.
    pub reverse_dns: Option<RawReverseDns>,
    /// Kerberos single sign-on (`Proxy-Authenticate: Negotiate`).
    pub kerberos: Option<RawKerberos>,
}

/// `[identity.kerberos]`: compiled by the shell's `settings::KerberosSettings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKerberos {
    /// The keytab holding the proxy's service key, relative to the policy.
    pub keytab: Spanned<String>,
    /// The service principal (`HTTP/proxy.school.local@SCHOOL.LOCAL`); default: any
    /// key in the keytab.
    pub service_principal: Option<Spanned<String>>,
}

/// `[[identity.devices]]`: a device name for an address (or every address of a
/// subnet: a trolley of laptops, a suite of PCs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    /// An address, or a network in CIDR form.
    pub address: Spanned<String>,
    /// The name recorded.
    pub name: Spanned<String>,
}

/// `[identity.reverse_dns]`: compiled by the shell's `settings::ReverseDnsSettings`
/// (defaults there).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReverseDns {
    /// Whether addresses are looked up at all.
    pub enabled: Option<bool>,
    /// A DNS server (`ADDRESS` or `ADDRESS:PORT`) instead of the system's resolvers.
    pub server: Option<Spanned<String>>,
    /// Milliseconds one lookup may take.
    pub timeout_ms: Option<u64>,
    /// Milliseconds a request waits for a name not yet known.
    pub wait_ms: Option<u64>,
    /// Longest seconds a name (or its absence) is remembered.
    pub cache_ttl_secs: Option<u64>,
    /// Most addresses remembered.
    pub cache_size: Option<usize>,
}

/// `[identity.directory]`: the connection settings (compiled by the shell's
/// `settings::DirectorySettings`, defaults there) and the group mapping (compiled into
/// the policy's identity rules).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `starttls` or `allow_plaintext`.
    pub url: Spanned<String>,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: Option<bool>,
    /// Allow `ldap://` without StartTLS: passwords cross the network in clear.
    pub allow_plaintext: Option<bool>,
    /// The service account's DN, for searches.
    pub bind_dn: Spanned<String>,
    /// File holding the service account's password (never the password itself).
    pub bind_password_file: Spanned<String>,
    /// Where users and groups are searched.
    pub base_dn: Spanned<String>,
    /// The user search filter, with `{user}` for the escaped account name.
    pub user_filter: Option<Spanned<String>>,
    /// `"walk"` (follow `member` upwards, any LDAP server) or `"ad-chain"` (AD's
    /// LDAP_MATCHING_RULE_IN_CHAIN): how nested groups are found.
    pub nested_groups: Option<Spanned<String>>,
    /// Extra CA certificate file (PEM) trusted for LDAPS / StartTLS.
    pub ca_file: Option<String>,
    /// Seconds to connect (and finish TLS).
    pub connect_timeout_secs: Option<u64>,
    /// Seconds for one bind or search.
    pub timeout_secs: Option<u64>,
    /// Seconds a successful sign-in is remembered.
    pub cache_ttl_secs: Option<u64>,
    /// Most sign-ins remembered.
    pub cache_size: Option<usize>,
    /// Seconds between re-reads of signed-in users' groups.
    pub sync_interval_secs: Option<u64>,
    /// `"default"` or `"refuse"`: what a user in no mapped group gets.
    pub unmapped: Option<Spanned<String>>,
    /// Directory groups → Gatehouse groups, first match wins in file order.
    #[serde(default)]
    pub groups: Vec<RawDirectoryGroup>,
}

/// `[[identity.directory.groups]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectoryGroup {
    /// The directory group: a DN, or a CN.
    pub directory: Spanned<String>,
    /// The Gatehouse group its members get.
    pub group: Name,
}

/// `[[identity.subnets]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubnet {
    /// Network in CIDR form.
    pub cidr: Spanned<String>,
    /// Group for clients in it.
    pub group: Name,
    /// `"none"` (default) or `"required"`: whether clients must authenticate.
    #[serde(default)]
    pub auth: Option<Spanned<String>>,
    /// What this subnet is (for people).
    #[serde(default)]
    pub description: String,
}

/// `[groups.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    /// Who is in it (for people).
    #[serde(default)]
    pub description: String,
    /// `"blocklist"` or `"allowlist"`.
    pub mode: Spanned<String>,
    /// Categories blocked at all times.
    #[serde(default)]
    pub block: Vec<Name>,
    /// Categories allowed explicitly (the walled garden in allowlist mode).
    #[serde(default)]
    pub allow: Vec<Name>,
    /// Category → schedule: blocked except inside the schedule's windows.
    #[serde(default)]
    pub allow_during: BTreeMap<Name, Name>,
    /// Sites (domains or host/path prefixes) always allowed for this group.
    #[serde(default)]
    pub allow_sites: Vec<Spanned<String>>,
    /// Sites always blocked for this group.
    #[serde(default)]
    pub block_sites: Vec<Spanned<String>>,
    /// Block requests whose host is an IP address.
    #[serde(default)]
    pub block_ip_literals: bool,
    /// Refuse TLS tunnels whose ClientHello names no server (default true).
    pub require_sni: Option<bool>,
    /// Refuse TLS tunnels whose ClientHello hides the server it wants behind Encrypted
    /// ClientHello (default true).
    pub block_ech: Option<bool>,
    /// `"block"` (default) or `"allow"`: what the group gets when the log cannot be written.
    pub on_log_failure: Option<Spanned<String>>,
    /// Dial search engines to their safe-search address (default true).
    pub safe_search: Option<bool>,
    /// `"strict"` (default), `"moderate"` or `"off"`: YouTube's Restricted Mode.
    pub youtube_restrict: Option<Spanned<String>>,
    /// Inspect this group's HTTPS with the school CA (default false).
    pub inspect_tls: Option<bool>,
    /// Add `safe=active` to Google search URLs (default: as `safe_search`).
    pub google_safe_active: Option<bool>,
    /// Send `YouTube-Restrict` at the `youtube_restrict` level (default true; nothing
    /// when `youtube_restrict` is off).
    pub youtube_restrict_header: Option<bool>,
    /// Inspected: Microsoft tenants that may be signed in to (`Restrict-Access-To-Tenants`).
    #[serde(default)]
    pub microsoft_tenants: Vec<Spanned<String>>,
    /// Inspected: the school's Microsoft directory id (`Restrict-Access-Context`).
    pub microsoft_tenant_context: Option<Spanned<String>>,
    /// Inspected: Google Workspace domains that may sign in (`X-GoogApps-Allowed-Domains`).
    #[serde(default)]
    pub google_allowed_domains: Vec<Spanned<String>>,
}

/// The users file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUsers {
    /// `[[user]]` entries.
    #[serde(default)]
    pub user: Vec<RawUser>,
}

/// `[[user]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// Login name.
    pub name: Name,
    /// Group the user belongs to.
    pub group: Name,
    /// Password hash (argon2 PHC string); never a plain password.
    pub password_hash: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_from_offsets() {
        let text = "a\nbb\n\nccc";
        let s = Source::new(Path::new("p.toml"), text);
        assert_eq!(s.line_of(0), 1);
        assert_eq!(s.line_of(1), 1);
        assert_eq!(s.line_of(2), 2);
        assert_eq!(s.line_of(5), 3);
        assert_eq!(s.line_of(6), 4);
        assert_eq!(s.line_of(8), 4);
    }

    #[test]
    fn unknown_key_is_a_syntax_error_with_line() {
        let text = "[school]\nname = \"x\"\ncolour = \"red\"\n";
        let s = Source::new(Path::new("p.toml"), text);
        let e = s.parse::<RawPolicy>(text).expect_err("unknown field");
        assert_eq!(e.line, Some(3));
        assert!(
            e.to_string()
                .starts_with("p.toml:3: unknown field `colour`"),
            "{e}"
        );
    }
}
