//! The shell's own settings from the policy file: the proxy listener and its limits
//! (`[server]`), the decision log (`[log]`), the admin listener (`[admin]`), the
//! school CA's files and enrolment listener (`[inspection]`), and how to reach the
//! school's directory (`[identity.directory]`; its group mapping is the policy's).
//!
//! They share the policy file with the rules, and are checked in the same pass (their
//! problems are listed with the policy's, by file and line), but nothing in the core
//! reads them: the decision does not depend on a timeout or a listen address. So they
//! live here, beside the shell that uses them, and the [`crate::snapshot::Snapshot`]
//! carries them next to the policy. Compiling them is pure, like the policy's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::Spanned;

use crate::core::config::{
    ConfigError, ConfigErrorKind, RawAdmin, RawDirectory, RawInspection, RawKerberos, RawLog,
    RawPolicy, RawReverseDns, RawServer, RawTransparent, Source,
};
use crate::core::host::Host;

/// Everything the shell takes from the policy file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The proxy's listener settings.
    pub server: ServerSettings,
    /// The decision log's settings.
    pub log: LogSettings,
    /// The admin listener.
    pub admin: AdminSettings,
    /// The school CA and its enrolment listener.
    pub inspection: InspectionSettings,
    /// Safeguarding alerts (`[alerts]`).
    pub alerts: crate::alerts::settings::AlertSettings,
    /// The school's directory, when `[identity.directory]` is set.
    pub directory: Option<DirectorySettings>,
    /// The proxy auto-configuration script, when `[pac]` is set.
    pub pac: Option<PacSettings>,
    /// Device names by reverse DNS, when `[identity.reverse_dns]` is set and enabled.
    pub reverse_dns: Option<ReverseDnsSettings>,
    /// Kerberos single sign-on, when `[identity.kerberos]` is set.
    pub kerberos: Option<KerberosSettings>,
    /// List feeds (`[[lists.sources]]`) and their schedule (`[lists] update_every`).
    pub feeds: crate::feeds::FeedSettings,
    /// Where grants live (`[grants] store`): the file, or etcd shared by several nodes.
    pub grants_store: GrantsStore,
    /// Transparent mode's listeners (`[transparent]`).
    pub transparent: TransparentSettings,
    /// The web console (`[console]`).
    pub console: crate::proxy::console::settings::ConsoleSettings,
}

/// Where grants live (`[grants] store`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GrantsStore {
    /// The grants file beside the policy (`[grants] file`): one node.
    #[default]
    File,
    /// An etcd cluster shared by several nodes (`[grants.etcd]`).
    Etcd(std::sync::Arc<EtcdSettings>),
}

/// `[grants.etcd]`, compiled: how a node reaches the etcd cluster holding the grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `http://HOST:PORT` or `https://HOST:PORT`, one per member.
    pub endpoints: Vec<String>,
    /// The key prefix, starting and ending with `/` (default `/gatehouse/grants/`).
    pub prefix: String,
    /// The CA for `https://` members (PEM); required with them.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for clusters that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// An etcd user and the file holding its password.
    pub user: Option<(String, PathBuf)>,
    /// How long to wait for a connection (default 2 s).
    pub dial_timeout: std::time::Duration,
    /// How long to wait for an answer (default 3 s).
    pub request_timeout: std::time::Duration,
}

impl EtcdSettings {
    /// Whether the members are reached over TLS.
    pub fn tls(&self) -> bool {
        self.endpoints.iter().any(|e| e.starts_with("https://"))
    }
}

/// `[transparent]`: where connections redirected by the firewall arrive. Each listener
/// is optional; with neither, transparent mode is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransparentSettings {
    /// Redirected port-80 connections: plain HTTP, decided on the `Host` header.
    pub http_listen: Option<std::net::SocketAddr>,
    /// Redirected port-443 connections: TLS, decided on the ClientHello's SNI.
    pub https_listen: Option<std::net::SocketAddr>,
}

/// `[pac]`: the validated section and the script written from it once, at load.
#[derive(Debug, Clone)]
pub struct PacSettings {
    /// The section.
    pub pac: crate::core::pac::Pac,
    /// The script browsers are given.
    pub script: std::sync::Arc<str>,
}

impl Settings {
    /// Compiles `[server]`, `[log]`, `[admin]` and `[inspection]` of the policy file at
    /// `source`; every problem found, with its line.
    pub fn compile(raw: &RawPolicy, source: &Source) -> Result<Settings, Vec<ConfigError>> {
        let mut c = Compiler {
            source,
            base: source.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            errors: Vec::new(),
        };
        let settings = Settings {
            server: c.server(&raw.server),
            log: c.log(&raw.log),
            admin: c.admin(&raw.admin, &raw.teachers, &raw.groups),
            inspection: c.inspection(&raw.inspection),
            alerts: crate::alerts::settings::AlertSettings::compile(
                &raw.alerts,
                &c.base,
                source,
                &mut c.errors,
            ),
            directory: raw.identity.directory.as_ref().map(|d| c.directory(d)),
            pac: raw.pac.as_ref().map(|p| {
                let pac = crate::core::pac::Pac::compile(p, source, &mut c.errors);
                let script = pac.script(&raw.school.name).into();
                PacSettings { pac, script }
            }),
            reverse_dns: raw
                .identity
                .reverse_dns
                .as_ref()
                .and_then(|r| c.reverse_dns(r)),
            kerberos: raw.identity.kerberos.as_ref().and_then(|k| c.kerberos(k)),
            feeds: crate::feeds::FeedSettings::compile(
                &raw.lists,
                &raw.categories,
                &c.base,
                source,
                &mut c.errors,
            ),
            grants_store: c.grants_store(&raw.grants),
            transparent: c.transparent(&raw.transparent),
            console: crate::proxy::console::settings::ConsoleSettings::compile(
                &raw.console,
                raw.identity.directory.is_some(),
                source,
                &mut c.errors,
            ),
        };
        if c.errors.is_empty() {
            Ok(settings)
        } else {
            Err(c.errors)
        }
    }
}

/// What an admin API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read grants.
    Viewer,
    /// Read and change grants.
    Technician,
    /// A teacher: lesson overrides for the classrooms and groups of its token, nothing
    /// else (no grants, no decisions: those name pupils).
    Teacher,
    /// The Designated Safeguarding Lead (or a deputy): reads and acknowledges alerts.
    Dsl,
    /// The IT Lead: the web console's status page (versions, lists, reloads, the log's
    /// health). A console role only: API tokens do not take it.
    ItLead,
}

impl Role {
    /// The word the policy uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Technician => "technician",
            Role::Teacher => "teacher",
            Role::Dsl => "dsl",
            Role::ItLead => "it-lead",
        }
    }

    /// The role a console account or directory rule names (`dsl`, `technician`,
    /// `teacher`, `it-lead`, `viewer`).
    pub fn parse(text: &str) -> Option<Role> {
        [
            Role::Viewer,
            Role::Technician,
            Role::Teacher,
            Role::Dsl,
            Role::ItLead,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// An admin API token, kept only as its hash.
#[derive(Debug, Clone)]
pub struct AdminToken {
    /// Whose it is.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// For a teacher: the classrooms and groups it may act for (empty otherwise).
    pub teacher: crate::core::grants::TeacherScope,
}

/// The admin listener (`[admin]`).
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Listen address. Default `127.0.0.1:9180`: loopback only.
    pub listen: std::net::SocketAddr,
    /// API tokens.
    pub tokens: Vec<AdminToken>,
    /// The certificate chain and key (PEM files) to serve the listener over TLS, when
    /// `tls_cert` and `tls_key` are set. Default none: plain HTTP, for loopback.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The school CA and where devices fetch it (`[inspection]`). The CA exists for TLS
/// inspection, which is opt-in per group; these settings only say where its files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectionSettings {
    /// The CA certificate (PEM). Default `../var/ca/ca.crt` beside the policy, next to
    /// the decision log.
    pub ca_cert: PathBuf,
    /// The CA's private key (PEM, mode 0600). Default `../var/ca/ca.key`.
    pub ca_key: PathBuf,
    /// Plain-HTTP listener serving the certificate to devices (`/ca.crt`, `/ca.pem`,
    /// `/`). Default none: no enrolment listener.
    pub enrol_listen: Option<std::net::SocketAddr>,
    /// Extra CA certificates (PEM files) trusted for the upstream servers of inspected
    /// tunnels, beside the public (Mozilla) roots. Default none.
    pub extra_roots: Vec<PathBuf>,
    /// Minted leaf certificates kept, least recently used dropped first. Default 10 000.
    pub leaf_cache_size: usize,
    /// How long a minted leaf certificate is valid. Default 24 hours: short, since it is
    /// minted again on demand; it is re-minted after half of it.
    pub leaf_validity: std::time::Duration,
}

/// The decision log's settings (`[log]`).
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Directory of segments. Default `../var/decisions` beside the policy.
    pub dir: PathBuf,
    /// This node's name; empty means the host name (filled in at start).
    pub node: String,
    /// Time between fsyncs. Default 100 ms: a power cut loses at most that.
    pub fsync_interval: std::time::Duration,
    /// Segment size at which a new one starts. Default 64 MiB.
    pub segment_bytes: u64,
    /// Entries that may wait for the writer. Default 65 536.
    pub queue: usize,
    /// Days to keep whole segments; 0 keeps all. Default 0.
    pub retention_days: u32,
}

/// The proxy listener's settings and limits (`[server]`), with their defaults.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Proxy listen address. Default `127.0.0.1:3128`: a first run exposes nothing.
    pub listen: std::net::SocketAddr,
    /// Largest request head. Default 64 KiB (→ `431`).
    pub max_header_bytes: usize,
    /// Most header fields. Default 100 (→ `431`).
    pub max_headers: usize,
    /// Longest request target. Default 8 KiB (→ `414`).
    pub max_uri_bytes: usize,
    /// Time to receive a head once started. Default 15 s (→ `408`).
    pub head_timeout: std::time::Duration,
    /// Keep-alive idle time. Default 60 s.
    pub idle_timeout: std::time::Duration,
    /// Request-body stall. Default 30 s.
    pub body_idle_timeout: std::time::Duration,
    /// Response-write stall. Default 30 s.
    pub write_idle_timeout: std::time::Duration,
    /// Upstream connect. Default 10 s (→ `504`).
    pub connect_timeout: std::time::Duration,
    /// Upstream response head. Default 60 s (→ `504`).
    pub upstream_timeout: std::time::Duration,
    /// Tunnel idle. Default 10 min.
    pub tunnel_idle_timeout: std::time::Duration,
    /// Tunnel lifetime. Default 8 h.
    pub tunnel_max_lifetime: std::time::Duration,
    /// ClientHello wait. Default 10 s.
    pub client_hello_timeout: std::time::Duration,
    /// Connection cap; 0 = from the file-descriptor limit.
    pub max_connections: usize,
    /// Per-client-address cap. Default 256.
    pub max_connections_per_client: usize,
    /// CONNECT ports. Default `[443]`.
    pub tunnel_ports: Vec<u16>,
    /// Internal networks that may be dialled anyway. Default none.
    pub allow_internal_destinations: Vec<IpNet>,
    /// Shutdown grace. Default 10 s.
    pub shutdown_grace: std::time::Duration,
    /// Static resolution overrides.
    pub resolve: HashMap<String, IpAddr>,
    /// Reload when the policy file, the users file or a list changes on disk (a
    /// Kubernetes ConfigMap update, an edit), as SIGHUP does. Default false. Read at
    /// start only.
    pub reload_on_change: bool,
}

impl LogSettings {
    /// The log directory that `[log]` names, relative to the policy file's directory
    /// `base`; default `../var/decisions`. For commands that read the log without
    /// loading the whole policy.
    pub fn dir_of(raw: &RawLog, base: &Path) -> PathBuf {
        base.join(raw.dir.as_deref().unwrap_or("../var/decisions"))
    }
}

/// How the connection to the directory is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryTls {
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
    /// `ldap://` upgraded with StartTLS before any bind.
    StartTls,
    /// `ldap://` in clear (`allow_plaintext = true`): passwords cross the network
    /// readable. For a directory on the same host or a test.
    Plain,
}

/// How nested groups are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestedGroups {
    /// Follow `member` upwards, one search per level (at most
    /// [`DirectorySettings::MAX_NESTING`] levels): works on any LDAP server.
    Walk,
    /// One search with Active Directory's LDAP_MATCHING_RULE_IN_CHAIN
    /// (`member:1.2.840.113556.1.4.1941:=`): AD only.
    AdChain,
}

/// The school's directory (`[identity.directory]`): where it is, how to search it, and
/// how long sign-ins are remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorySettings {
    /// The server, `ldaps://…` or `ldap://…`.
    pub url: String,
    /// How the connection is protected.
    pub tls: DirectoryTls,
    /// The service account that searches.
    pub bind_dn: String,
    /// The file holding its password (read when the directory is contacted).
    pub bind_password_file: PathBuf,
    /// Where users and groups are searched.
    pub base_dn: String,
    /// The user search filter with `{user}`. Default Active Directory's.
    pub user_filter: String,
    /// How nested groups are found. Default [`NestedGroups::Walk`].
    pub nested_groups: NestedGroups,
    /// Extra CA certificate (PEM) trusted for the directory's TLS; without it the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// Connect (and TLS) timeout. Default 5 s.
    pub connect_timeout: std::time::Duration,
    /// One bind or search. Default 5 s.
    pub timeout: std::time::Duration,
    /// How long a successful sign-in is remembered. Default 5 min.
    pub cache_ttl: std::time::Duration,
    /// Most sign-ins remembered. Default 10 000.
    pub cache_size: usize,
    /// Re-read signed-in users' groups this often. Default 5 min.
    pub sync_interval: std::time::Duration,
}

/// Kerberos single sign-on (`[identity.kerberos]`): the proxy's keytab and the service
/// principal it accepts tickets for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KerberosSettings {
    /// The keytab (`HTTP/<proxy FQDN>`'s key), resolved against the policy's directory.
    pub keytab: PathBuf,
    /// `HTTP/proxy.school.local@SCHOOL.LOCAL`; `None`: any key in the keytab.
    pub service_principal: Option<String>,
}

/// Device names by reverse DNS (`[identity.reverse_dns]`): a PTR lookup of the client's
/// address, off the request's path but for a short wait, remembered for a bounded time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseDnsSettings {
    /// The DNS server asked; `None`: the system's (`/etc/resolv.conf`).
    pub server: Option<std::net::SocketAddr>,
    /// How long one lookup may take. Default 500 ms.
    pub timeout: std::time::Duration,
    /// How long a request waits for a name not yet known. Default 20 ms; the lookup
    /// goes on after that, and later requests get its answer.
    pub wait: std::time::Duration,
    /// The longest a name, or its absence, is remembered (a record's own TTL if
    /// shorter). Default 10 min.
    pub cache_ttl: std::time::Duration,
    /// Most addresses remembered. Default 10 000.
    pub cache_size: usize,
}

impl DirectorySettings {
    /// The deepest group nesting followed by [`NestedGroups::Walk`]; a loop of groups
    /// (A in B in A) ends there too.
    pub const MAX_NESTING: usize = 8;
}

/// One compilation: where relative paths start, and every problem found so far.
struct Compiler<'a> {
    source: &'a Source,
    base: PathBuf,
    errors: Vec<ConfigError>,
}

fn bad_at(c: &mut Compiler<'_>, span: std::ops::Range<usize>, what: &str) {
    c.errors.push(
        c.source
            .error_at(span, ConfigErrorKind::InvalidValue(what.to_string())),
    );
}

impl Compiler<'_> {
    fn grants_store(&mut self, raw: &crate::core::config::RawGrantRules) -> GrantsStore {
        let mut bad = |span: std::ops::Range<usize>, what: String| {
            self.errors.push(
                self.source
                    .error_at(span, ConfigErrorKind::InvalidValue(what)),
            )
        };
        let store = raw.store.as_ref();
        match (store.map(|s| s.get_ref().as_str()), &raw.etcd) {
            (None | Some("file"), _) => return GrantsStore::File,
            (Some("etcd"), Some(_)) => {}
            (Some("etcd"), None) => {
                let span = store.map_or(0..0, |s| s.span());
                bad(
                    span,
                    "[grants] store = \"etcd\" needs a [grants.etcd] section with endpoints".into(),
                );
                return GrantsStore::File;
            }
            (Some(other), _) => {
                let span = store.map_or(0..0, |s| s.span());
                bad(
                    span,
                    format!("[grants] store {other:?} is not \"file\" or \"etcd\""),
                );
                return GrantsStore::File;
            }
        }
        let Some(etcd) = &raw.etcd else {
            return GrantsStore::File;
        };
        let mut endpoints = Vec::new();
        if etcd.endpoints.get_ref().is_empty() {
            bad(
                etcd.endpoints.span(),
                "[grants.etcd] endpoints is empty: list the members, e.g. [\"http://10.0.0.5:2379\"]"
                    .into(),
            );
        }
        for e in etcd.endpoints.get_ref() {
            let text = e.get_ref().trim().trim_end_matches('/');
            let lower = text.to_ascii_lowercase();
            let hostport = lower
                .strip_prefix("http://")
                .or_else(|| lower.strip_prefix("https://"));
            match hostport {
                Some(h) if !h.is_empty() && !h.contains('/') => endpoints.push(text.to_string()),
                _ => bad(
                    e.span(),
                    format!(
                        "[grants.etcd] endpoint {:?} is not http://HOST:PORT or https://HOST:PORT",
                        e.get_ref()
                    ),
                ),
            }
        }
        let tls = endpoints.iter().any(|e| e.starts_with("https://"));
        if tls && endpoints.iter().any(|e| e.starts_with("http://")) {
            bad(
                etcd.endpoints.span(),
                "[grants.etcd] endpoints mix http:// and https://: use one or the other".into(),
            );
        }
        let prefix = match &etcd.prefix {
            Some(p) => {
                let text = p.get_ref();
                if !text.starts_with('/') || !text.ends_with('/') || text.len() < 2 {
                    bad(
                        p.span(),
                        format!(
                            "[grants.etcd] prefix {text:?} must start and end with \"/\", e.g. \"/gatehouse/grants/\""
                        ),
                    );
                }
                text.clone()
            }
            None => "/gatehouse/grants/".to_string(),
        };
        let file = |f: &Option<Spanned<String>>| f.as_ref().map(|f| self.base.join(f.get_ref()));
        let ca_file = file(&etcd.ca_file);
        let cert = file(&etcd.cert_file);
        let key = file(&etcd.key_file);
        let tls_span = etcd
            .ca_file
            .as_ref()
            .or(etcd.cert_file.as_ref())
            .or(etcd.key_file.as_ref())
            .map(|f| f.span());
        let client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                self.errors.push(self.source.error_at(
                    tls_span.clone().unwrap_or(0..0),
                    ConfigErrorKind::InvalidValue(
                        "[grants.etcd] cert_file and key_file go together".into(),
                    ),
                ));
                None
            }
        };
        if let (Some(span), false) = (tls_span, tls) {
            self.errors.push(
                self.source.error_at(
                    span,
                    ConfigErrorKind::InvalidValue(
                        "[grants.etcd] ca_file, cert_file and key_file are for https:// endpoints"
                            .into(),
                    ),
                ),
            );
        }
        if tls && ca_file.is_none() {
            bad_at(
                self,
                etcd.endpoints.span(),
                "[grants.etcd] https:// endpoints need ca_file, the CA that signed the members' certificates",
            );
        }
        let user = match (&etcd.user, &etcd.password_file) {
            (Some(u), Some(p)) => Some((u.get_ref().clone(), self.base.join(p.get_ref()))),
            (None, None) => None,
            (Some(s), None) | (None, Some(s)) => {
                self.errors.push(self.source.error_at(
                    s.span(),
                    ConfigErrorKind::InvalidValue(
                        "[grants.etcd] user and password_file go together".into(),
                    ),
                ));
                None
            }
        };
        let ms = |v: Option<u64>, default: u64| {
            std::time::Duration::from_millis(v.unwrap_or(default).max(100))
        };
        GrantsStore::Etcd(std::sync::Arc::new(EtcdSettings {
            endpoints,
            prefix,
            ca_file,
            client_cert,
            user,
            dial_timeout: ms(etcd.dial_timeout_ms, 2000),
            request_timeout: ms(etcd.request_timeout_ms, 3000),
        }))
    }

    fn directory(&mut self, raw: &RawDirectory) -> DirectorySettings {
        use std::time::Duration;
        let url = raw.url.get_ref().trim().to_string();
        let starttls = raw.starttls.unwrap_or(false);
        let plaintext = raw.allow_plaintext.unwrap_or(false);
        let lower = url.to_ascii_lowercase();
        let mut bad = |span: std::ops::Range<usize>, what: String| {
            self.errors.push(
                self.source
                    .error_at(span, ConfigErrorKind::InvalidValue(what)),
            )
        };
        let tls = if lower.starts_with("ldaps://") {
            if starttls {
                bad(
                    raw.url.span(),
                    "[identity.directory] starttls is for ldap:// URLs; ldaps:// is TLS already"
                        .into(),
                );
            }
            DirectoryTls::Ldaps
        } else if lower.starts_with("ldap://") {
            if starttls {
                DirectoryTls::StartTls
            } else if plaintext {
                DirectoryTls::Plain
            } else {
                bad(
                    raw.url.span(),
                    format!(
                        "[identity.directory] url {url:?} would send passwords in clear: use ldaps://, or starttls = true, or (only for a directory on this host) allow_plaintext = true"
                    ),
                );
                DirectoryTls::Plain
            }
        } else {
            bad(
                raw.url.span(),
                format!("[identity.directory] url {url:?} is not ldaps://HOST or ldap://HOST"),
            );
            DirectoryTls::Ldaps
        };
        for (field, value) in [("bind_dn", &raw.bind_dn), ("base_dn", &raw.base_dn)] {
            if !value.get_ref().contains('=') {
                bad(
                    value.span(),
                    format!(
                        "[identity.directory] {field} {:?} is not a DN such as \"DC=school,DC=local\"",
                        value.get_ref()
                    ),
                );
            }
        }
        let user_filter = match &raw.user_filter {
            Some(f) => {
                let text = f.get_ref().trim();
                if !text.contains(crate::core::directory::USER_PLACEHOLDER)
                    || !text.starts_with('(')
                    || !text.ends_with(')')
                {
                    bad(
                        f.span(),
                        format!(
                            "[identity.directory] user_filter {text:?} must be a filter in parentheses holding {{user}}, such as \"(uid={{user}})\""
                        ),
                    );
                }
                text.to_string()
            }
            None => crate::core::directory::DEFAULT_USER_FILTER.to_string(),
        };
        let nested_groups = match raw.nested_groups.as_ref().map(|n| n.get_ref().as_str()) {
            None | Some("walk") => NestedGroups::Walk,
            Some("ad-chain") => NestedGroups::AdChain,
            Some(other) => {
                let span = raw.nested_groups.as_ref().map(|n| n.span()).unwrap_or(0..0);
                bad(
                    span,
                    format!("[identity.directory] nested_groups {other:?} is not \"walk\" or \"ad-chain\""),
                );
                NestedGroups::Walk
            }
        };
        let secs = |v: Option<u64>, default: u64, min: u64| {
            Duration::from_secs(v.unwrap_or(default).max(min))
        };
        DirectorySettings {
            url,
            tls,
            bind_dn: raw.bind_dn.get_ref().trim().to_string(),
            bind_password_file: self.base.join(raw.bind_password_file.get_ref()),
            base_dn: raw.base_dn.get_ref().trim().to_string(),
            user_filter,
            nested_groups,
            ca_file: raw.ca_file.as_ref().map(|f| self.base.join(f)),
            connect_timeout: secs(raw.connect_timeout_secs, 5, 1),
            timeout: secs(raw.timeout_secs, 5, 1),
            cache_ttl: secs(raw.cache_ttl_secs, 300, 1),
            cache_size: raw.cache_size.unwrap_or(10_000).max(1),
            sync_interval: secs(raw.sync_interval_secs, 300, 1),
        }
    }

    fn kerberos(&mut self, raw: &RawKerberos) -> Option<KerberosSettings> {
        let principal = raw.service_principal.as_ref().and_then(|p| {
            let text = p.get_ref().trim();
            // HTTP/host@REALM: a service, a host, a realm; browsers ask for HTTP/ and the
            // proxy's name as they were told it.
            let well_formed = text
                .split_once('/')
                .and_then(|(service, rest)| Some((service, rest.split_once('@')?)))
                .is_some_and(|(service, (host, realm))| {
                    !service.is_empty()
                        && !host.is_empty()
                        && !realm.is_empty()
                        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
                });
            if well_formed {
                Some(text.to_string())
            } else {
                self.errors.push(self.source.error_at(
                    p.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "[identity.kerberos] service_principal {text:?} is not SERVICE/HOST@REALM, such as \"HTTP/proxy.school.local@SCHOOL.LOCAL\""
                    )),
                ));
                None
            }
        });
        let keytab = raw.keytab.get_ref().trim();
        if keytab.is_empty() {
            self.errors.push(self.source.error_at(
                raw.keytab.span(),
                ConfigErrorKind::InvalidValue(
                    "[identity.kerberos] keytab is empty: give the keytab file holding HTTP/<proxy name>'s key".into(),
                ),
            ));
            return None;
        }
        Some(KerberosSettings {
            keytab: self.base.join(keytab),
            service_principal: principal,
        })
    }

    fn reverse_dns(&mut self, raw: &RawReverseDns) -> Option<ReverseDnsSettings> {
        use std::time::Duration;
        let server = raw.server.as_ref().and_then(|s| {
            let text = s.get_ref().trim();
            let parsed = text
                .parse::<std::net::SocketAddr>()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)));
            match parsed {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.errors.push(self.source.error_at(
                        s.span(),
                        ConfigErrorKind::InvalidValue(format!(
                            "[identity.reverse_dns] server {text:?} is not ADDRESS or ADDRESS:PORT (\"10.0.0.2\", \"10.0.0.2:53\", \"[fd00::2]:53\")"
                        )),
                    ));
                    None
                }
            }
        });
        if !raw.enabled.unwrap_or(true) {
            return None;
        }
        let millis = |v: Option<u64>, default: u64, min: u64, max: u64| {
            Duration::from_millis(v.unwrap_or(default).clamp(min, max))
        };
        Some(ReverseDnsSettings {
            server,
            timeout: millis(raw.timeout_ms, 500, 10, 10_000),
            // Never longer than the lookup itself, and never long: it is on the
            // request's path.
            wait: millis(raw.wait_ms, 20, 0, 1_000).min(millis(raw.timeout_ms, 500, 10, 10_000)),
            cache_ttl: Duration::from_secs(raw.cache_ttl_secs.unwrap_or(600).clamp(1, 86_400)),
            cache_size: raw.cache_size.unwrap_or(10_000).max(1),
        })
    }

    fn transparent(&mut self, raw: &RawTransparent) -> TransparentSettings {
        let mut listen = |field: &str, value: &Option<crate::core::config::Name>| {
            let v = value.as_ref()?;
            match v.get_ref().parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.errors.push(self.source.error_at(
                        v.span(),
                        ConfigErrorKind::InvalidValue(format!(
                            "[transparent] {field} {:?} is not an address:port such as \"0.0.0.0:3129\"",
                            v.get_ref()
                        )),
                    ));
                    None
                }
            }
        };
        let http_listen = listen("http_listen", &raw.http_listen);
        let https_listen = listen("https_listen", &raw.https_listen);
        // (Port 0, an ephemeral port each, is two listeners even at one address.)
        if http_listen.is_some_and(|a| a.port() != 0) && http_listen == https_listen {
            self.errors.push(self.source.error(ConfigErrorKind::InvalidValue(
                "[transparent] http_listen and https_listen are the same address: each needs a port of its own".into(),
            )));
        }
        TransparentSettings {
            http_listen,
            https_listen,
        }
    }

    fn inspection(&mut self, raw: &RawInspection) -> InspectionSettings {
        let enrol_listen = raw.enrol_listen.as_ref().and_then(|l| {
            l.get_ref()
                .parse::<std::net::SocketAddr>()
                .map_err(|_| {
                    self.errors.push(self.source.error_at(
                        l.span(),
                        ConfigErrorKind::InvalidValue(format!(
                            "enrol_listen {:?} is not an address:port such as \"0.0.0.0:8081\"",
                            l.get_ref()
                        )),
                    ))
                })
                .ok()
        });
        let ca_cert = self
            .base
            .join(raw.ca_cert.as_deref().unwrap_or("../var/ca/ca.crt"));
        let ca_key = self
            .base
            .join(raw.ca_key.as_deref().unwrap_or("../var/ca/ca.key"));
        if ca_cert == ca_key {
            // `ca init` would write the certificate over the key.
            self.errors.push(self.source.error(ConfigErrorKind::InvalidValue(
                "[inspection] ca_cert and ca_key name the same file: the key needs a file of its own".into(),
            )));
        }
        let leaf_cache_size = match &raw.leaf_cache_size {
            Some(n) if *n.get_ref() == 0 => {
                self.errors.push(self.source.error_at(
                    n.span(),
                    ConfigErrorKind::InvalidValue(
                        "[inspection] leaf_cache_size must be at least 1".into(),
                    ),
                ));
                1
            }
            Some(n) => *n.get_ref(),
            None => 10_000,
        };
        let leaf_hours = match &raw.leaf_validity_hours {
            Some(h) if !(1..=24 * 90).contains(h.get_ref()) => {
                self.errors.push(self.source.error_at(
                    h.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "[inspection] leaf_validity_hours {} is not between 1 and 2160 (90 days)",
                        h.get_ref()
                    )),
                ));
                24
            }
            Some(h) => *h.get_ref(),
            None => 24,
        };
        InspectionSettings {
            ca_cert,
            ca_key,
            enrol_listen,
            extra_roots: raw.extra_roots.iter().map(|r| self.base.join(r)).collect(),
            leaf_cache_size,
            leaf_validity: std::time::Duration::from_secs(leaf_hours * 3600),
        }
    }

    fn log(&mut self, raw: &RawLog) -> LogSettings {
        LogSettings {
            dir: LogSettings::dir_of(raw, &self.base),
            node: raw.node.clone().unwrap_or_default(),
            fsync_interval: std::time::Duration::from_millis(
                raw.fsync_interval_ms.unwrap_or(100).clamp(1, 60_000),
            ),
            segment_bytes: raw.segment_mib.unwrap_or(64).clamp(1, 4096) << 20,
            queue: raw.queue.unwrap_or(65_536).clamp(16, 1 << 22),
            retention_days: raw.retention_days.unwrap_or(0),
        }
    }

    fn admin(
        &mut self,
        raw: &RawAdmin,
        teachers: &crate::core::config::RawTeachers,
        groups: &std::collections::BTreeMap<
            crate::core::config::Name,
            crate::core::config::RawGroup,
        >,
    ) -> AdminSettings {
        let (source, errors) = (self.source, &mut self.errors);
        let default = std::net::SocketAddr::from(([127, 0, 0, 1], 9180));
        let listen = match &raw.listen {
            None => default,
            Some(l) => l.get_ref().parse().unwrap_or_else(|_| {
                errors.push(source.error_at(
                    l.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "admin listen {:?} is not an address:port",
                        l.get_ref()
                    )),
                ));
                default
            }),
        };
        let mut tokens = Vec::new();
        for t in &raw.tokens {
            let role = match t.role.get_ref().as_str() {
                "technician" => Role::Technician,
                "viewer" => Role::Viewer,
                "teacher" => Role::Teacher,
                "dsl" => Role::Dsl,
                other => {
                    errors.push(source.error_at(
                        t.role.span(),
                        ConfigErrorKind::InvalidValue(format!(
                            "token role {other:?} is not \"technician\", \"viewer\", \"teacher\" or \"dsl\""
                        )),
                    ));
                    continue;
                }
            };
            // A teacher's rooms and classes must exist; other roles have none.
            if role != Role::Teacher && !(t.classrooms.is_empty() && t.groups.is_empty()) {
                errors.push(source.error_at(
                    t.name.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "token {:?}: classrooms and groups are for teacher tokens only",
                        t.name.get_ref()
                    )),
                ));
                continue;
            }
            if role == Role::Teacher && t.classrooms.is_empty() && t.groups.is_empty() {
                errors.push(source.error_at(
                    t.name.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "teacher token {:?} names no classrooms or groups it may act for",
                        t.name.get_ref()
                    )),
                ));
                continue;
            }
            let mut unknown = false;
            for c in &t.classrooms {
                if !teachers
                    .classrooms
                    .keys()
                    .any(|k| k.get_ref() == c.get_ref())
                {
                    unknown = true;
                    errors.push(source.error_at(
                        c.span(),
                        ConfigErrorKind::InvalidValue(format!(
                            "token {:?}: no classroom {:?} in [teachers.classrooms]",
                            t.name.get_ref(),
                            c.get_ref()
                        )),
                    ));
                }
            }
            for g in &t.groups {
                if !groups.keys().any(|k| k.get_ref() == g.get_ref()) {
                    unknown = true;
                    errors.push(source.error_at(
                        g.span(),
                        ConfigErrorKind::InvalidValue(format!(
                            "token {:?}: no group {:?} in the policy",
                            t.name.get_ref(),
                            g.get_ref()
                        )),
                    ));
                }
            }
            if unknown {
                continue;
            }
            let hex = t.sha256.get_ref();
            let mut sha256 = [0u8; 32];
            let ok = hex.len() == 64
                && hex
                    .as_bytes()
                    .chunks(2)
                    .zip(sha256.iter_mut())
                    .all(|(pair, out)| {
                        match std::str::from_utf8(pair)
                            .ok()
                            .and_then(|p| u8::from_str_radix(p, 16).ok())
                        {
                            Some(b) => {
                                *out = b;
                                true
                            }
                            None => false,
                        }
                    });
            if !ok {
                errors.push(source.error_at(
                    t.sha256.span(),
                    ConfigErrorKind::InvalidValue(
                        "sha256 must be 64 hex digits: the SHA-256 of the token (`gatehouse admin token` makes one)".into(),
                    ),
                ));
                continue;
            }
            if tokens
                .iter()
                .any(|x: &AdminToken| x.name == *t.name.get_ref())
            {
                errors.push(source.error_at(
                    t.name.span(),
                    ConfigErrorKind::Duplicate(format!(
                        "token name {:?} is used twice",
                        t.name.get_ref()
                    )),
                ));
                continue;
            }
            tokens.push(AdminToken {
                name: t.name.get_ref().clone(),
                role,
                sha256,
                teacher: crate::core::grants::TeacherScope {
                    classrooms: t.classrooms.iter().map(|c| c.get_ref().clone()).collect(),
                    groups: t.groups.iter().map(|g| g.get_ref().clone()).collect(),
                },
            });
        }
        let tls = match (&raw.tls_cert, &raw.tls_key) {
            (Some(cert), Some(key)) => Some((
                self.base.join(cert.get_ref()),
                self.base.join(key.get_ref()),
            )),
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => {
                self.errors.push(self.source.error_at(
                    one.span(),
                    ConfigErrorKind::InvalidValue(
                        "[admin] tls_cert and tls_key go together: set both, or neither".into(),
                    ),
                ));
                None
            }
        };
        AdminSettings {
            listen,
            tokens,
            tls,
        }
    }

    fn server(&mut self, raw: &RawServer) -> ServerSettings {
        let (source, errors) = (self.source, &mut self.errors);
        use std::time::Duration;
        let secs = |v: Option<u64>, default: u64| Duration::from_secs(v.unwrap_or(default));
        let listen = match &raw.listen {
            None => std::net::SocketAddr::from(([127, 0, 0, 1], 3128)),
            Some(l) => match l.get_ref().parse() {
                Ok(a) => a,
                Err(_) => {
                    errors.push(source.error_at(
                        l.span(),
                        ConfigErrorKind::InvalidValue(format!(
                            "listen {:?} is not an address:port such as \"127.0.0.1:3128\"",
                            l.get_ref()
                        )),
                    ));
                    std::net::SocketAddr::from(([127, 0, 0, 1], 3128))
                }
            },
        };
        let mut allow_internal = Vec::new();
        for c in raw.allow_internal_destinations.iter().flatten() {
            match c
                .get_ref()
                .parse::<IpNet>()
                .or_else(|_| c.get_ref().parse::<IpAddr>().map(IpNet::from))
            {
                Ok(n) => allow_internal.push(n.trunc()),
                Err(_) => errors.push(source.error_at(
                    c.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "allow_internal_destinations entry {:?} is not a CIDR",
                        c.get_ref()
                    )),
                )),
            }
        }
        let mut resolve = HashMap::new();
        for (name, addr) in &raw.resolve {
            let host = Host::parse(name);
            match (host, addr.get_ref().parse::<IpAddr>()) {
                (Ok(Host::Name(n)), Ok(ip)) => {
                    resolve.insert(n, ip);
                }
                _ => errors.push(source.error_at(
                    addr.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "resolve {name:?} = {:?}: expected a host name and an IP address",
                        addr.get_ref()
                    )),
                )),
            }
        }
        let tunnel_ports = raw.tunnel_ports.clone().unwrap_or_else(|| vec![443]);
        if tunnel_ports.contains(&0) {
            errors.push(source.error(ConfigErrorKind::InvalidValue(
                "tunnel_ports cannot contain 0".into(),
            )));
        }
        ServerSettings {
            listen,
            max_header_bytes: raw.max_header_bytes.unwrap_or(64 * 1024).max(1024),
            max_headers: raw.max_headers.unwrap_or(100).max(8),
            max_uri_bytes: raw.max_uri_bytes.unwrap_or(8 * 1024).max(256),
            head_timeout: secs(raw.head_timeout_secs, 15),
            idle_timeout: secs(raw.idle_timeout_secs, 60),
            body_idle_timeout: secs(raw.body_idle_timeout_secs, 30),
            write_idle_timeout: secs(raw.write_idle_timeout_secs, 30),
            connect_timeout: secs(raw.connect_timeout_secs, 10),
            upstream_timeout: secs(raw.upstream_timeout_secs, 60),
            tunnel_idle_timeout: secs(raw.tunnel_idle_timeout_secs, 600),
            tunnel_max_lifetime: secs(raw.tunnel_max_lifetime_secs, 8 * 3600),
            client_hello_timeout: secs(raw.client_hello_timeout_secs, 10),
            max_connections: raw.max_connections.unwrap_or(0),
            max_connections_per_client: raw.max_connections_per_client.unwrap_or(256).max(1),
            tunnel_ports,
            allow_internal_destinations: allow_internal,
            shutdown_grace: secs(raw.shutdown_grace_secs, 10),
            resolve,
            reload_on_change: raw.reload_on_change.unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(inspection: &str) -> Result<Settings, Vec<ConfigError>> {
        let text =
            format!("[school]\nname = \"x\"\n[identity]\ndefault_group = \"a\"\n{inspection}");
        let source = Source::new(Path::new("/etc/gatehouse/policy.toml"), &text);
        let raw: RawPolicy = source.parse(&text).expect("test policy parses");
        Settings::compile(&raw, &source)
    }

    #[test]
    fn inspection_settings_table() {
        let base = Path::new("/etc/gatehouse");
        // (the [inspection] section as written, ca_cert, ca_key, enrol_listen)
        let rows: [(&str, PathBuf, PathBuf, Option<&str>); 4] = [
            (
                "",
                base.join("../var/ca/ca.crt"),
                base.join("../var/ca/ca.key"),
                None,
            ),
            (
                "[inspection]\n",
                base.join("../var/ca/ca.crt"),
                base.join("../var/ca/ca.key"),
                None,
            ),
            (
                "[inspection]\nca_cert = \"ca/school.crt\"\nca_key = \"/srv/keys/school.key\"\n",
                base.join("ca/school.crt"),
                PathBuf::from("/srv/keys/school.key"),
                None,
            ),
            (
                "[inspection]\nenrol_listen = \"0.0.0.0:8081\"\n",
                base.join("../var/ca/ca.crt"),
                base.join("../var/ca/ca.key"),
                Some("0.0.0.0:8081"),
            ),
        ];
        for (section, cert, key, listen) in rows {
            let s = compile(section).expect("compiles").inspection;
            assert_eq!(s.ca_cert, cert, "{section}");
            assert_eq!(s.ca_key, key, "{section}");
            assert_eq!(
                s.enrol_listen,
                listen.map(|l| l.parse().expect("test address")),
                "{section}"
            );
        }
    }

    #[test]
    fn directory_tls_and_defaults_table() {
        let section = |extra: &str| {
            format!(
                "[identity.directory]\nbind_dn = \"cn=svc,dc=x\"\nbind_password_file = \"svc.pw\"\nbase_dn = \"dc=x\"\n{extra}"
            )
        };
        // (fields, the TLS it gets, or None: refused)
        let rows: &[(&str, Option<DirectoryTls>)] = &[
            ("url = \"ldaps://dc1\"", Some(DirectoryTls::Ldaps)),
            ("url = \"LDAPS://dc1:636\"", Some(DirectoryTls::Ldaps)),
            (
                "url = \"ldap://dc1\"\nstarttls = true",
                Some(DirectoryTls::StartTls),
            ),
            (
                "url = \"ldap://dc1\"\nstarttls = true\nallow_plaintext = true",
                Some(DirectoryTls::StartTls),
            ),
            (
                "url = \"ldap://127.0.0.1\"\nallow_plaintext = true",
                Some(DirectoryTls::Plain),
            ),
            ("url = \"ldap://dc1\"", None),
            ("url = \"ldap://dc1\"\nallow_plaintext = false", None),
            ("url = \"ldaps://dc1\"\nstarttls = true", None),
            ("url = \"dc1.school.local\"", None),
        ];
        for (fields, want) in rows {
            let got = compile(&section(fields));
            match want {
                Some(tls) => {
                    let d = got.expect("compiles").directory.expect("directory");
                    assert_eq!(d.tls, *tls, "{fields}");
                }
                None => assert!(got.is_err(), "{fields}"),
            }
        }
        let d = compile(&section("url = \"ldaps://dc1\""))
            .expect("compiles")
            .directory
            .expect("directory");
        assert_eq!(d.user_filter, crate::core::directory::DEFAULT_USER_FILTER);
        assert_eq!(d.nested_groups, NestedGroups::Walk);
        assert_eq!(d.cache_ttl, std::time::Duration::from_secs(300));
        assert_eq!(d.sync_interval, std::time::Duration::from_secs(300));
        assert_eq!(d.cache_size, 10_000);
        assert_eq!(d.bind_password_file, Path::new("/etc/gatehouse/svc.pw"));
        assert_eq!(d.ca_file, None);
        assert!(compile("").expect("compiles").directory.is_none());
    }

    #[test]
    fn transparent_settings_table() {
        let addr = |a: &str| Some(a.parse::<std::net::SocketAddr>().expect("test address"));
        // (the section as written, the listeners it gives, or the error's start)
        let rows: [(&str, Result<TransparentSettings, &str>); 6] = [
            ("", Ok(TransparentSettings::default())),
            ("[transparent]\n", Ok(TransparentSettings::default())),
            (
                "[transparent]\nhttp_listen = \"0.0.0.0:3129\"\nhttps_listen = \"[::]:3130\"\n",
                Ok(TransparentSettings {
                    http_listen: addr("0.0.0.0:3129"),
                    https_listen: addr("[::]:3130"),
                }),
            ),
            (
                "[transparent]\nhttps_listen = \"3130\"\n",
                Err("policy.toml:7: [transparent] https_listen \"3130\" is not an address:port"),
            ),
            (
                "[transparent]\nhttp_listen = \"0.0.0.0:3129\"\nhttps_listen = \"0.0.0.0:3129\"\n",
                Err("policy.toml: [transparent] http_listen and https_listen are the same address"),
            ),
            (
                "[transparent]\nlisten = \"0.0.0.0:3129\"\n",
                Err("policy.toml:7: unknown field `listen`"),
            ),
        ];
        for (section, want) in rows {
            let text =
                format!("[school]\nname = \"x\"\n[identity]\ndefault_group = \"a\"\n\n{section}");
            let source = Source::new(Path::new("policy.toml"), &text);
            let got = match source.parse::<RawPolicy>(&text) {
                Err(e) => Err(e.to_string()),
                Ok(raw) => Settings::compile(&raw, &source)
                    .map(|s| s.transparent)
                    .map_err(|errors| errors[0].to_string()),
            };
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{section}"),
                (Err(message), Err(start)) => assert!(message.starts_with(start), "{message}"),
                (got, want) => panic!("{section}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn bad_inspection_settings_name_the_line() {
        let rows = [
            (
                "[inspection]\nenrol_listen = \"8081\"\n",
                "policy.toml:7: enrol_listen \"8081\" is not an address:port",
            ),
            (
                "[inspection]\nca_cert = \"a\"\nenrol = \"0.0.0.0:8081\"\n",
                "policy.toml:8: unknown field `enrol`",
            ),
            (
                "[inspection]\nca_cert = \"ca/ca.pem\"\nca_key = \"ca/ca.pem\"\n",
                "policy.toml: [inspection] ca_cert and ca_key name the same file",
            ),
        ];
        for (section, expected) in rows {
            let text =
                format!("[school]\nname = \"x\"\n[identity]\ndefault_group = \"a\"\n\n{section}");
            let source = Source::new(Path::new("policy.toml"), &text);
            let message = match source.parse::<RawPolicy>(&text) {
                Err(e) => e.to_string(),
                Ok(raw) => match Settings::compile(&raw, &source) {
                    Err(errors) => errors[0].to_string(),
                    Ok(_) => String::from("compiled"),
                },
            };
            assert!(message.starts_with(expected), "{message}");
        }
    }
    /// `[grants] store` and `[grants.etcd]`: a table of settings as written and what
    /// they compile to, or the file:line message that refuses them.
    #[test]
    fn grants_store_settings_table() {
        let base = Path::new("/etc/gatehouse");
        let rows: &[(&str, Result<GrantsStore, &str>)] = &[
            ("", Ok(GrantsStore::File)),
            ("[grants]\nstore = \"file\"\n", Ok(GrantsStore::File)),
            (
                "[grants]\nstore = \"etcd\"\n[grants.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
                Ok(GrantsStore::Etcd(std::sync::Arc::new(EtcdSettings {
                    endpoints: vec!["http://127.0.0.1:2379".into()],
                    prefix: "/gatehouse/grants/".into(),
                    ca_file: None,
                    client_cert: None,
                    user: None,
                    dial_timeout: std::time::Duration::from_millis(2000),
                    request_timeout: std::time::Duration::from_millis(3000),
                }))),
            ),
            (
                "[grants]\nstore = \"etcd\"\n[grants.etcd]\nendpoints = [\"https://e1:2379/\", \"https://e2:2379\"]\nprefix = \"/trust/g/\"\nca_file = \"etcd/ca.crt\"\ncert_file = \"/srv/c.pem\"\nkey_file = \"k.pem\"\nuser = \"gh\"\npassword_file = \"pw\"\ndial_timeout_ms = 700\nrequest_timeout_ms = 900\n",
                Ok(GrantsStore::Etcd(std::sync::Arc::new(EtcdSettings {
                    endpoints: vec!["https://e1:2379".into(), "https://e2:2379".into()],
                    prefix: "/trust/g/".into(),
                    ca_file: Some(base.join("etcd/ca.crt")),
                    client_cert: Some((PathBuf::from("/srv/c.pem"), base.join("k.pem"))),
                    user: Some(("gh".into(), base.join("pw"))),
                    dial_timeout: std::time::Duration::from_millis(700),
                    request_timeout: std::time::Duration::from_millis(900),
                }))),
            ),
            (
                "[grants]\nstore = \"consul\"\n",
                Err("policy.toml:7: [grants] store \"consul\" is not \"file\" or \"etcd\""),
            ),
            (
                "[grants]\nstore = \"etcd\"\n",
                Err("policy.toml:7: [grants] store = \"etcd\" needs a [grants.etcd] section"),
            ),
            (
                "[grants]\nstore = \"etcd\"\n[grants.etcd]\nendpoints = []\n",
                Err("policy.toml:9: [grants.etcd] endpoints is empty"),
            ),
            (
                "[grants]\nstore = \"etcd\"\n[grants.etcd]\nendpoints = [\"10.0.0.5:2379\"]\n",
                Err("policy.toml:9: [grants.etcd] endpoint \"10.0.0.5:2379\" is not http://HOST:PORT"),
            ),
            (
                "[grants]\nstore = \"etcd\"\n[grants.etcd]\nendpoints = [\"https://e1:2379\"]\n",
                Err("policy.toml:9: [grants.etcd] https:// endpoints need ca_file"),
            ),
            (
                "[grants]\nstore = \"etcd\"\n[grants.etcd]\nendpoints = [\"http://e1:2379\"]\nprefix = \"gatehouse\"\n",
                Err("policy.toml:10: [grants.etcd] prefix \"gatehouse\" must start and end with \"/\""),
            ),
            (
                "[grants]\nstore = \"etcd\"\n[grants.etcd]\nendpoints = [\"http://e1:2379\"]\nuser = \"gh\"\n",
                Err("policy.toml:10: [grants.etcd] user and password_file go together"),
            ),
            (
                "[grants]\nstore = \"etcd\"\n[grants.etcd]\nendpoints = [\"http://e1:2379\"]\nca_file = \"ca.crt\"\n",
                Err("policy.toml:10: [grants.etcd] ca_file, cert_file and key_file are for https://"),
            ),
            (
                "[grants]\nstore = \"etcd\"\n[grants.etcd]\nendpoints = [\"http://e1:2379\"]\ntimeout = 3\n",
                Err("policy.toml:10: unknown field `timeout`"),
            ),
        ];
        for (section, expected) in rows {
            let text =
                format!("[school]\nname = \"x\"\n[identity]\ndefault_group = \"a\"\n\n{section}");
            let source = Source::new(&base.join("policy.toml"), &text);
            let got = match source.parse::<RawPolicy>(&text) {
                Err(e) => Err(e.to_string()),
                Ok(raw) => Settings::compile(&raw, &source)
                    .map(|s| s.grants_store)
                    .map_err(|errors| errors[0].to_string()),
            };
            match (expected, got) {
                (Ok(want), Ok(got)) => assert_eq!(&got, want, "{section}"),
                (Err(want), Err(got)) => assert!(
                    got.replace("/etc/gatehouse/", "").starts_with(want),
                    "{section}: {got}"
                ),
                (want, got) => panic!("{section}: wanted {want:?}, got {got:?}"),
            }
        }
    }
}
