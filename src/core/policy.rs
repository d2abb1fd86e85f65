//! The policy: a validated, immutable picture of who may reach what, and [`Policy::decide`].
//!
//! [`Policy::compile`] turns the raw file ([`crate::core::config`]) into typed rules, collecting
//! every problem with its file and line. Once a value is a `Policy` it is valid: names
//! resolve, no group can reach an `illegal` category, schedules parse.
//!
//! `decide` is a pure function of (policy, requester, target, classification, grants,
//! time). It applies DESIGN.md's precedence:
//!
//! 1. an `illegal` category blocks, for every group, always;
//! 2. an active grant covering the requester and the request allows it;
//! 3. the group's `block_sites` block, its `allow_sites` allow; then, for groups that
//!    block them, IP-literal hosts are blocked;
//! 4. a category the group blocks at this moment blocks, naming the most severe;
//! 5. otherwise the group's mode decides (`blocklist` allows; `allowlist` allows only
//!    categories the group `allow`s and its `allow_sites`).
//!
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::core::category::{Category, CategoryId, CategorySet, Severity, MAX_CATEGORIES};
use crate::core::classify::CompiledLists;
use crate::core::config::{
    ConfigError, ConfigErrorKind, ConfigErrors, Name, RawPolicy, RawUsers, Source,
};
use crate::core::host::{Host, Target};
use crate::core::identity::{AuthRequirement, Identity, SubnetRule, User};
use crate::core::schedule::{parse_tz, Schedule, ScheduleId, Window};
// Re-exported while the shell moves to the modules' own paths.
pub use crate::core::group::{Group, GroupId, Mode};
pub use crate::core::site::{SiteEntry, SiteList};
pub use crate::core::verdict::{Action, GrantRef, Reason, ReasonCode, Requester, Verdict};

/// The rules grants must follow (`[grants]`).
#[derive(Debug, Clone)]
pub struct GrantRules {
    /// The grants file. Default `grants.toml` beside the policy.
    pub file: PathBuf,
    /// Tickets must match this. Default `^[A-Z]+-[0-9]+$` (`HD-4411`).
    pub ticket_pattern: regex::Regex,
    /// The longest a grant may last. Default 30 days.
    pub max_duration: chrono::Duration,
}

/// What an admin API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read grants.
    Viewer,
    /// Read and change grants.
    Technician,
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
}

/// The admin listener (`[admin]`).
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Listen address. Default `127.0.0.1:9180`: loopback only.
    pub listen: std::net::SocketAddr,
    /// API tokens.
    pub tokens: Vec<AdminToken>,
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
}

/// Where one category's lists are.
#[derive(Debug, Clone)]
pub struct CategoryDef {
    /// Name, severity, description.
    pub category: Category,
    /// Directory holding its `domains`, `urls`, `expressions`, `search_terms`.
    pub list_dir: PathBuf,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The policy file.
    pub path: PathBuf,
    /// School or trust name.
    pub school: String,
    /// The school's time zone.
    pub timezone: chrono_tz::Tz,
    /// The lists directory.
    pub lists_dir: PathBuf,
    /// Where the compiled domain index is cached.
    pub lists_cache: PathBuf,
    /// The users file, if the policy names one.
    pub users_file: Option<PathBuf>,
    categories: Vec<CategoryDef>,
    illegal: CategorySet,
    schedules: Vec<Schedule>,
    groups: Vec<Group>,
    /// Identity rules.
    pub identity: Identity,
    /// The proxy's listener settings.
    pub server: ServerSettings,
    /// The decision log's settings.
    pub log: LogSettings,
    /// The rules for grants.
    pub grant_rules: GrantRules,
    /// The admin listener.
    pub admin: AdminSettings,
    /// `allow_sites` entries with their lines, for [`Policy::check_lists`].
    allow_site_lines: Vec<(GroupId, usize, usize)>,
    source: Source,
}

impl Policy {
    /// Compiles a parsed policy (and users file) into a `Policy`, collecting every error.
    pub fn compile(
        raw: RawPolicy,
        source: &Source,
        users: Option<(RawUsers, &Source)>,
    ) -> Result<Policy, ConfigErrors> {
        let mut errors: Vec<ConfigError> = Vec::new();
        let base = source.path.parent().unwrap_or(Path::new(".")).to_path_buf();

        let timezone = match parse_tz(raw.school.timezone.get_ref()) {
            Ok(tz) => tz,
            Err(e) => {
                errors.push(source.error_at(
                    raw.school.timezone.span(),
                    ConfigErrorKind::InvalidValue(e.to_string()),
                ));
                chrono_tz::Europe::London
            }
        };
        let lists_dir = base.join(raw.lists.dir.as_deref().unwrap_or("../blocklists"));
        let lists_cache = match &raw.lists.cache {
            Some(c) => base.join(c),
            None => lists_dir.join(".compiled").join("domains.idx"),
        };

        // Categories, in the order the file declares them (the tie-break for "most severe").
        let mut raw_categories: Vec<_> = raw.categories.into_iter().collect();
        raw_categories.sort_by_key(|(name, _)| name.span().start);
        if raw_categories.len() > MAX_CATEGORIES {
            errors.push(source.error(ConfigErrorKind::InvalidValue(format!(
                "{} categories defined; at most {MAX_CATEGORIES} are supported",
                raw_categories.len()
            ))));
            raw_categories.truncate(MAX_CATEGORIES);
        }
        let mut categories = Vec::new();
        let mut illegal = CategorySet::EMPTY;
        for (i, (name, cat)) in raw_categories.into_iter().enumerate() {
            let severity = match cat.severity.get_ref().as_str() {
                "illegal" => Severity::Illegal,
                "safeguarding" => Severity::Safeguarding,
                "inappropriate" => Severity::Inappropriate,
                "productivity" => Severity::Productivity,
                other => {
                    errors.push(source.error_at(
                        cat.severity.span(),
                        ConfigErrorKind::InvalidValue(format!(
                            "severity {other:?} of category {:?} is not one of illegal, safeguarding, inappropriate, productivity",
                            name.get_ref()
                        )),
                    ));
                    Severity::Productivity
                }
            };
            if let Err(why) = check_name(name.get_ref()) {
                errors.push(source.error_at(
                    name.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "category name {:?}: {why}",
                        name.get_ref()
                    )),
                ));
            }
            if severity == Severity::Illegal {
                if let Some(id) = CategoryId::new(i) {
                    illegal.insert(id);
                }
            }
            let list_dir = match &cat.list {
                Some(dir) => base.join(dir),
                None => lists_dir.join(name.get_ref()),
            };
            categories.push(CategoryDef {
                category: Category {
                    name: name.into_inner(),
                    severity,
                    description: cat.description,
                },
                list_dir,
            });
        }
        let category_ids: HashMap<String, CategoryId> = categories
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((c.category.name.clone(), CategoryId::new(i)?)))
            .collect();
        let known_categories = known(categories.iter().map(|c| c.category.name.as_str()));

        // Schedules.
        let mut schedules = Vec::new();
        let mut schedule_ids = HashMap::new();
        for (name, sched) in raw.schedules {
            let tz = match &sched.timezone {
                Some(tz) => match parse_tz(tz.get_ref()) {
                    Ok(tz) => tz,
                    Err(e) => {
                        errors.push(
                            source
                                .error_at(tz.span(), ConfigErrorKind::InvalidValue(e.to_string())),
                        );
                        continue;
                    }
                },
                None => timezone,
            };
            let mut windows = Vec::new();
            for w in &sched.windows {
                match Window::parse(w.get_ref()) {
                    Ok(window) => windows.push(window),
                    Err(e) => errors.push(source.error_at(
                        w.span(),
                        ConfigErrorKind::InvalidValue(format!(
                            "schedule {:?}: {e}",
                            name.get_ref()
                        )),
                    )),
                }
            }
            if sched.windows.is_empty() {
                errors.push(source.error_at(
                    name.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "schedule {:?} has no windows",
                        name.get_ref()
                    )),
                ));
            }
            schedule_ids.insert(name.get_ref().clone(), ScheduleId::new(schedules.len()));
            schedules.push(Schedule {
                name: name.into_inner(),
                tz,
                windows,
            });
        }
        let known_schedules = known(schedules.iter().map(|s| s.name.as_str()));

        // Groups.
        let mut raw_groups: Vec<_> = raw.groups.into_iter().collect();
        raw_groups.sort_by_key(|(name, _)| name.span().start);
        let group_ids: HashMap<String, GroupId> = raw_groups
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.get_ref().clone(), GroupId::new(i)))
            .collect();
        let known_groups = known(raw_groups.iter().map(|(n, _)| n.get_ref().as_str()));
        let category_of = |name: &Name, errors: &mut Vec<ConfigError>| -> Option<CategoryId> {
            let id = category_ids.get(name.get_ref()).copied();
            if id.is_none() {
                errors.push(source.error_at(
                    name.span(),
                    ConfigErrorKind::UnknownCategory {
                        name: name.get_ref().clone(),
                        known: known_categories.clone(),
                    },
                ));
            }
            id
        };
        let mut groups = Vec::new();
        let mut allow_site_lines = Vec::new();
        for (gi, (name, g)) in raw_groups.into_iter().enumerate() {
            let gname = name.get_ref().clone();
            if let Err(why) = check_name(&gname) {
                errors.push(source.error_at(
                    name.span(),
                    ConfigErrorKind::InvalidValue(format!("group name {gname:?}: {why}")),
                ));
            }
            let mode = match g.mode.get_ref().as_str() {
                "blocklist" => Mode::Blocklist,
                "allowlist" => Mode::Allowlist,
                other => {
                    errors.push(source.error_at(
                        g.mode.span(),
                        ConfigErrorKind::InvalidValue(format!(
                            "group {gname:?}: mode {other:?} is not \"blocklist\" or \"allowlist\""
                        )),
                    ));
                    Mode::Blocklist
                }
            };
            let mut seen: HashMap<CategoryId, &'static str> = HashMap::new();
            let mut note = |id: CategoryId,
                            field: &'static str,
                            at: &Name,
                            errors: &mut Vec<ConfigError>|
             -> bool {
                if let Some(prev) = seen.insert(id, field) {
                    let what = if prev == field {
                        format!(
                            "group {gname:?}: category {:?} is listed twice in {field}",
                            at.get_ref()
                        )
                    } else {
                        format!(
                            "group {gname:?}: category {:?} is in both {prev} and {field}; say once what the group gets",
                            at.get_ref()
                        )
                    };
                    errors.push(source.error_at(at.span(), ConfigErrorKind::Duplicate(what)));
                    return false;
                }
                true
            };
            let mut block = CategorySet::EMPTY;
            for c in &g.block {
                if let Some(id) = category_of(c, &mut errors) {
                    if note(id, "block", c, &mut errors) {
                        block.insert(id);
                    }
                }
            }
            let mut allow = CategorySet::EMPTY;
            for c in &g.allow {
                if let Some(id) = category_of(c, &mut errors) {
                    if illegal.contains(id) {
                        errors.push(source.error_at(
                            c.span(),
                            ConfigErrorKind::IllegalAllowed(format!(
                                "group {gname:?} allows {:?}, an illegal category: illegal categories are blocked for every group",
                                c.get_ref()
                            )),
                        ));
                    } else if note(id, "allow", c, &mut errors) {
                        allow.insert(id);
                    }
                }
            }
            let mut allow_during = Vec::new();
            for (c, s) in &g.allow_during {
                let Some(id) = category_of(c, &mut errors) else {
                    continue;
                };
                if illegal.contains(id) {
                    errors.push(source.error_at(
                        c.span(),
                        ConfigErrorKind::IllegalAllowed(format!(
                            "group {gname:?} allows {:?} during {:?}, but it is an illegal category: illegal categories are blocked for every group at all times",
                            c.get_ref(),
                            s.get_ref()
                        )),
                    ));
                    continue;
                }
                if !note(id, "allow_during", c, &mut errors) {
                    continue;
                }
                match schedule_ids.get(s.get_ref()) {
                    Some(&sid) => allow_during.push((id, sid)),
                    None => errors.push(source.error_at(
                        s.span(),
                        ConfigErrorKind::UnknownSchedule {
                            name: s.get_ref().clone(),
                            known: known_schedules.clone(),
                        },
                    )),
                }
            }
            let mut site_list =
                |entries: &[toml::Spanned<String>], field: &str, errors: &mut Vec<ConfigError>| {
                    let mut list = SiteList::default();
                    for e in entries {
                        match SiteEntry::parse(e.get_ref()) {
                            Ok(entry) => {
                                if field == "allow_sites" {
                                    allow_site_lines.push((
                                        GroupId::new(gi),
                                        list.entries().len(),
                                        source.line_of(e.span().start),
                                    ));
                                }
                                list.push(entry)
                            }
                            Err(why) => errors.push(source.error_at(
                                e.span(),
                                ConfigErrorKind::InvalidValue(format!(
                                    "group {gname:?}: {field} entry {:?}: {why}",
                                    e.get_ref()
                                )),
                            )),
                        }
                    }
                    list
                };
            let allow_sites = site_list(&g.allow_sites, "allow_sites", &mut errors);
            let block_sites = site_list(&g.block_sites, "block_sites", &mut errors);
            for (i, a) in allow_sites.entries().iter().enumerate() {
                if let Some(b) = block_sites
                    .entries()
                    .iter()
                    .find(|b| b.host == a.host && b.path == a.path)
                {
                    let span = g.allow_sites[i].span();
                    errors.push(source.error_at(
                        span,
                        ConfigErrorKind::Duplicate(format!(
                            "group {gname:?}: {:?} is in both allow_sites and block_sites ({:?})",
                            a.text, b.text
                        )),
                    ));
                }
            }
            let fail_closed = match g.on_log_failure.as_ref().map(|v| v.get_ref().as_str()) {
                None | Some("block") => true,
                Some("allow") => false,
                Some(other) => {
                    let span = g.on_log_failure.as_ref().map(|v| v.span()).unwrap_or(0..0);
                    errors.push(source.error_at(
                        span,
                        ConfigErrorKind::InvalidValue(format!(
                            "group {gname:?}: on_log_failure {other:?} is not \"block\" or \"allow\""
                        )),
                    ));
                    true
                }
            };
            groups.push(Group {
                name: gname,
                description: g.description,
                mode,
                block,
                allow,
                allow_during,
                allow_sites,
                block_sites,
                block_ip_literals: g.block_ip_literals,
                require_sni: g.require_sni.unwrap_or(true),
                block_ech: g.block_ech.unwrap_or(true),
                fail_closed,
            });
        }
        let group_of =
            |name: &Name, errors: &mut Vec<ConfigError>, src: &Source| -> Option<GroupId> {
                let id = group_ids.get(name.get_ref()).copied();
                if id.is_none() {
                    errors.push(src.error_at(
                        name.span(),
                        ConfigErrorKind::UnknownGroup {
                            name: name.get_ref().clone(),
                            known: known_groups.clone(),
                        },
                    ));
                }
                id
            };

        // Identity.
        let default_group = group_of(&raw.identity.default_group, &mut errors, source);
        let mut subnets = Vec::new();
        let mut seen_nets: BTreeMap<IpNet, usize> = BTreeMap::new();
        for s in &raw.identity.subnets {
            let net: Option<IpNet> = match s.cidr.get_ref().parse::<IpNet>() {
                Ok(n) => Some(n.trunc()),
                Err(_) => match s.cidr.get_ref().parse::<IpAddr>() {
                    Ok(ip) => Some(IpNet::from(ip)),
                    Err(_) => {
                        errors.push(source.error_at(
                            s.cidr.span(),
                            ConfigErrorKind::InvalidValue(format!(
                                "subnet {:?} is not a network in CIDR form (e.g. \"10.20.0.0/16\")",
                                s.cidr.get_ref()
                            )),
                        ));
                        None
                    }
                },
            };
            if let Some(net) = net {
                let line = source.line_of(s.cidr.span().start);
                if let Some(prev) = seen_nets.insert(net, line) {
                    errors.push(source.error_at(
                        s.cidr.span(),
                        ConfigErrorKind::Duplicate(format!(
                            "subnet {net} is already defined on line {prev}"
                        )),
                    ));
                }
            }
            let auth = match s.auth.as_ref().map(|a| a.get_ref().as_str()) {
                None | Some("none") => AuthRequirement::None,
                Some("required") => AuthRequirement::Required,
                Some(other) => {
                    let span = s.auth.as_ref().map(|a| a.span()).unwrap_or(0..0);
                    errors.push(source.error_at(
                        span,
                        ConfigErrorKind::InvalidValue(format!(
                            "auth {other:?} is not \"none\" or \"required\""
                        )),
                    ));
                    AuthRequirement::None
                }
            };
            let group = group_of(&s.group, &mut errors, source);
            if let (Some(net), Some(group)) = (net, group) {
                subnets.push(SubnetRule {
                    net,
                    group,
                    auth,
                    description: s.description.clone(),
                });
            }
        }
        let mut user_list = Vec::new();
        if let Some((raw_users, users_source)) = users {
            let mut seen_users: HashMap<String, usize> = HashMap::new();
            for u in raw_users.user {
                let line = users_source.line_of(u.name.span().start);
                if let Some(prev) = seen_users.insert(u.name.get_ref().clone(), line) {
                    errors.push(users_source.error_at(
                        u.name.span(),
                        ConfigErrorKind::Duplicate(format!(
                            "user {:?} is already defined on line {prev}",
                            u.name.get_ref()
                        )),
                    ));
                    continue;
                }
                if let Some(group) = group_of(&u.group, &mut errors, users_source) {
                    user_list.push(User {
                        name: u.name.into_inner(),
                        group,
                        password_hash: u.password_hash,
                    });
                }
            }
        }

        let server = compile_server(&raw.server, source, &mut errors);
        let pattern_text = raw
            .grants
            .ticket_pattern
            .as_ref()
            .map(|p| p.get_ref().clone())
            .unwrap_or_else(|| "^[A-Z]+-[0-9]+$".to_string());
        let ticket_pattern = match regex::Regex::new(&pattern_text) {
            Ok(r) => r,
            Err(e) => {
                let span = raw
                    .grants
                    .ticket_pattern
                    .as_ref()
                    .map(|p| p.span())
                    .unwrap_or(0..0);
                errors.push(source.error_at(
                    span,
                    ConfigErrorKind::InvalidValue(format!("ticket_pattern: {e}")),
                ));
                regex::Regex::new("^$").expect("the empty pattern compiles")
            }
        };
        let grant_rules = GrantRules {
            file: base.join(raw.grants.file.as_deref().unwrap_or("grants.toml")),
            ticket_pattern,
            max_duration: chrono::Duration::days(i64::from(
                raw.grants.max_days.unwrap_or(30).max(1),
            )),
        };
        let admin = compile_admin(&raw.admin, source, &mut errors);
        let log = LogSettings {
            dir: base.join(raw.log.dir.as_deref().unwrap_or("../var/decisions")),
            node: raw.log.node.clone().unwrap_or_default(),
            fsync_interval: std::time::Duration::from_millis(
                raw.log.fsync_interval_ms.unwrap_or(100).clamp(1, 60_000),
            ),
            segment_bytes: raw.log.segment_mib.unwrap_or(64).clamp(1, 4096) << 20,
            queue: raw.log.queue.unwrap_or(65_536).clamp(16, 1 << 22),
            retention_days: raw.log.retention_days.unwrap_or(0),
        };

        if !errors.is_empty() {
            errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            return Err(ConfigErrors(errors));
        }
        let default_group = default_group.expect("no errors means the default group resolved");
        Ok(Policy {
            path: source.path.clone(),
            school: raw.school.name,
            timezone,
            lists_dir,
            lists_cache,
            users_file: raw.identity.users_file.as_ref().map(|f| base.join(f)),
            categories,
            illegal,
            schedules,
            groups,
            identity: Identity::new(default_group, subnets, user_list),
            server,
            log,
            grant_rules,
            admin,
            allow_site_lines,
            source: source.clone(),
        })
    }

    /// Checks the policy against its compiled lists: an `allow_sites` entry that an
    /// illegal list matches would be a way round rule 1, so it is refused.
    pub fn check_lists(&self, lists: &CompiledLists) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for &(group, entry, line) in &self.allow_site_lines {
            let group = &self.groups[group.index()];
            let site = &group.allow_sites.entries()[entry];
            if let Some(c) = self.illegal_bits_of_site(lists, site).iter().next() {
                errors.push(ConfigError {
                    file: self.source.path.clone(),
                    line: Some(line),
                    kind: ConfigErrorKind::IllegalAllowed(format!(
                        "group {:?}: allow_sites entry {:?} is on the list of {:?}, an illegal category: it cannot be allowed",
                        group.name, site.text, self.categories[c.index()].category.name
                    )),
                });
            }
        }
        errors
    }

    /// The illegal categories whose lists match a site entry.
    pub fn illegal_bits_of_site(&self, lists: &CompiledLists, site: &SiteEntry) -> CategorySet {
        let target = Target {
            scheme: crate::core::host::Scheme::Http,
            host: site.host.clone(),
            port: 80,
            path: site.path.clone().unwrap_or_else(|| "/".to_string()),
            query: None,
        };
        lists
            .classify(&target)
            .categories
            .intersection(self.illegal)
    }

    /// The categories, in declaration order.
    pub fn categories(&self) -> impl Iterator<Item = (CategoryId, &CategoryDef)> {
        self.categories
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((CategoryId::new(i)?, c)))
    }

    /// One category.
    pub fn category(&self, id: CategoryId) -> &Category {
        &self.categories[id.index()].category
    }

    /// A category by name.
    pub fn category_id(&self, name: &str) -> Option<CategoryId> {
        self.categories
            .iter()
            .position(|c| c.category.name == name)
            .and_then(CategoryId::new)
    }

    /// The set of `illegal` categories.
    pub fn illegal(&self) -> CategorySet {
        self.illegal
    }

    /// The groups, in declaration order.
    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &Group)> {
        self.groups
            .iter()
            .enumerate()
            .map(|(i, g)| (GroupId::new(i), g))
    }

    /// One group.
    pub fn group(&self, id: GroupId) -> &Group {
        &self.groups[id.index()]
    }

    /// A group by name.
    pub fn group_id(&self, name: &str) -> Option<GroupId> {
        self.groups
            .iter()
            .position(|g| g.name == name)
            .map(GroupId::new)
    }

    /// The schedules.
    pub fn schedules(&self) -> &[Schedule] {
        &self.schedules
    }

    /// One schedule.
    pub fn schedule(&self, id: ScheduleId) -> &Schedule {
        &self.schedules[id.index()]
    }

    /// A schedule by name.
    pub fn schedule_named(&self, name: &str) -> Option<&Schedule> {
        self.schedules.iter().find(|s| s.name == name)
    }

    /// The most severe category of a set (ties: the one declared first).
    pub fn most_severe(&self, set: CategorySet) -> Option<CategoryId> {
        set.iter().max_by(|a, b| {
            self.category(*a)
                .severity
                .cmp(&self.category(*b).severity)
                .then(b.cmp(a))
        })
    }

    /// The code the decision log records for a reason (kept while callers move to
    /// [`Reason::code`]).
    pub fn reason_code(reason: &Reason) -> ReasonCode {
        reason.code()
    }

    /// Category names of a set, most severe first.
    pub fn category_names(&self, set: CategorySet) -> Vec<&str> {
        let mut ids: Vec<CategoryId> = set.iter().collect();
        ids.sort_by(|a, b| {
            self.category(*b)
                .severity
                .cmp(&self.category(*a).severity)
                .then(a.cmp(b))
        });
        ids.into_iter()
            .map(|c| self.category(c).name.as_str())
            .collect()
    }
}

fn compile_admin(
    raw: &crate::core::config::RawAdmin,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> AdminSettings {
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
            other => {
                errors.push(source.error_at(
                    t.role.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "token role {other:?} is not \"technician\" or \"viewer\""
                    )),
                ));
                continue;
            }
        };
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
        });
    }
    AdminSettings { listen, tokens }
}

fn compile_server(
    raw: &crate::core::config::RawServer,
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> ServerSettings {
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
    }
}

fn known<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<&str> = names.collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

/// Names of groups and categories appear in paths, metrics labels and URLs.
fn check_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err("names use lowercase letters, digits, '-' and '_', start with a letter or digit, and are at most 64 characters")
    }
}
