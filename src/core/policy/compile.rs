//! [`Policy::compile`]: the raw file ([`crate::core::config`]) into typed rules, in steps.
//!
//! Each step compiles one part of the file (school, categories, schedules, groups,
//! identity, grants) and hands the next
//! steps what they resolve names against. Every step goes on after a problem, with a
//! harmless stand-in, and adds the problem to one list with its file and line: a
//! technician fixes a policy in one pass rather than one error at a time.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::{CategoryDef, Classroom, GrantRules, Policy, TeacherRules};
use crate::core::category::{
    AlertMode, Category, CategoryId, CategorySet, Severity, ILLEGAL_BLOCK_MESSAGE, MAX_CATEGORIES,
};
use crate::core::config::{
    ConfigError, ConfigErrorKind, ConfigErrors, Name, RawCategory, RawDirectory, RawGrantRules,
    RawGroup, RawIdentity, RawInspection, RawPolicy, RawSafeSearch, RawSchedule, RawTeachers,
    RawUsers, Source,
};
use crate::core::directory::{GroupMapping, GroupPattern, GroupRule, Unmapped};
use crate::core::group::{Group, GroupId, Mode};
use crate::core::identity::{device_name, AuthRequirement, DeviceRule, Identity, SubnetRule, User};
use crate::core::inspect::{Controls, InspectionRules, TenantRestriction};
use crate::core::safe_search::{
    self, Engine, Engines, GroupSafeSearch, HostPattern, Level, Setting,
};
use crate::core::schedule::{parse_tz, Schedule, ScheduleId, Window};
use crate::core::site::{SiteEntry, SiteList};

impl Policy {
    /// Compiles a parsed policy (and users file) into a `Policy`, collecting every error.
    pub fn compile(
        raw: RawPolicy,
        source: &Source,
        users: Option<(RawUsers, &Source)>,
    ) -> Result<Policy, ConfigErrors> {
        let mut c = Compiler {
            source,
            base: source.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            errors: Vec::new(),
        };
        let timezone = c.timezone(&raw.school.timezone);
        let lists_dir = c
            .base
            .join(raw.lists.dir.as_deref().unwrap_or("../blocklists"));
        let lists_cache = match &raw.lists.cache {
            Some(cache) => c.base.join(cache),
            None => lists_dir.join(".compiled").join("domains.idx"),
        };
        let categories = c.categories(raw.categories, &lists_dir);
        let (schedules, schedule_ids) = c.schedules(raw.schedules, timezone);
        let groups = c.groups(raw.groups, &categories, &schedule_ids, &schedules);
        let identity = c.identity(&raw.identity, users, &groups);
        let grant_rules = c.grant_rules(&raw.grants);
        let safe_search = c.safe_search(raw.safe_search);
        let teachers = c.teachers(&raw.teachers, &schedule_ids, &groups.ids);
        let inspection = c.inspection(&raw.inspection, &categories);

        let mut errors = c.errors;
        if !errors.is_empty() {
            errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            return Err(ConfigErrors(errors));
        }
        let identity = identity.expect("no errors means the default group resolved");
        Ok(Policy {
            path: source.path.clone(),
            school: raw.school.name,
            timezone,
            lists_dir,
            lists_cache,
            users_file: raw.identity.users_file.as_ref().map(|f| c.base.join(f)),
            categories: categories.defs,
            illegal: categories.illegal,
            schedules,
            groups: groups.groups,
            identity,
            grant_rules,
            safe_search,
            teachers,
            inspection,
            allow_site_lines: groups.allow_site_lines,
            source: source.clone(),
        })
    }
}

/// One compilation: where relative paths start, and every problem found so far.
struct Compiler<'a> {
    source: &'a Source,
    base: PathBuf,
    errors: Vec<ConfigError>,
}

/// The categories step's result: definitions in file order, the illegal ones, and names.
struct Categories {
    defs: Vec<CategoryDef>,
    illegal: CategorySet,
    ids: HashMap<String, CategoryId>,
    known: String,
}

/// The groups step's result.
struct Groups {
    groups: Vec<Group>,
    ids: HashMap<String, GroupId>,
    known: String,
    /// `allow_sites` entries with their lines, for [`Policy::check_lists`].
    allow_site_lines: Vec<(GroupId, usize, usize)>,
}

impl Compiler<'_> {
    fn invalid(&mut self, span: std::ops::Range<usize>, what: String) {
        self.errors.push(
            self.source
                .error_at(span, ConfigErrorKind::InvalidValue(what)),
        );
    }

    fn timezone(&mut self, name: &toml::Spanned<String>) -> chrono_tz::Tz {
        match parse_tz(name.get_ref()) {
            Ok(tz) => tz,
            Err(e) => {
                self.invalid(name.span(), e.to_string());
                chrono_tz::Europe::London
            }
        }
    }

    /// Categories, in the order the file declares them (the tie-break for "most severe").
    fn categories(&mut self, raw: BTreeMap<Name, RawCategory>, lists_dir: &Path) -> Categories {
        let mut raw_categories: Vec<_> = raw.into_iter().collect();
        raw_categories.sort_by_key(|(name, _)| name.span().start);
        if raw_categories.len() > MAX_CATEGORIES {
            self.errors
                .push(self.source.error(ConfigErrorKind::InvalidValue(format!(
                    "{} categories defined; at most {MAX_CATEGORIES} are supported",
                    raw_categories.len()
                ))));
            raw_categories.truncate(MAX_CATEGORIES);
        }
        let mut defs = Vec::new();
        let mut illegal = CategorySet::EMPTY;
        for (i, (name, cat)) in raw_categories.into_iter().enumerate() {
            let severity = match cat.severity.get_ref().as_str() {
                "illegal" => Severity::Illegal,
                "safeguarding" => Severity::Safeguarding,
                "inappropriate" => Severity::Inappropriate,
                "productivity" => Severity::Productivity,
                other => {
                    self.invalid(
                        cat.severity.span(),
                        format!(
                            "severity {other:?} of category {:?} is not one of illegal, safeguarding, inappropriate, productivity",
                            name.get_ref()
                        ),
                    );
                    Severity::Productivity
                }
            };
            if let Err(why) = check_name(name.get_ref()) {
                self.invalid(
                    name.span(),
                    format!("category name {:?}: {why}", name.get_ref()),
                );
            }
            if severity == Severity::Illegal {
                if let Some(id) = CategoryId::new(i) {
                    illegal.insert(id);
                }
            }
            let mut alert_mode = |raw: &Option<toml::Spanned<String>>, default: AlertMode| {
                let Some(raw) = raw else { return default };
                AlertMode::parse(raw.get_ref()).unwrap_or_else(|| {
                    self.invalid(
                        raw.span(),
                        format!(
                            "alert {:?} of category {:?} is not one of immediate, digest, none",
                            raw.get_ref(),
                            name.get_ref()
                        ),
                    );
                    default
                })
            };
            let alert = alert_mode(&cat.alert, AlertMode::default_for(severity));
            let term_alert = alert_mode(&cat.term_alert, alert);
            let list_dir = match &cat.list {
                Some(dir) => self.base.join(dir),
                None => lists_dir.join(name.get_ref()),
            };
            defs.push(CategoryDef {
                category: Category {
                    name: name.into_inner(),
                    severity,
                    description: cat.description,
                    // Illegal content always gets a splash: the block page must not invite
                    // a request to unblock it.
                    block_message: cat
                        .block_message
                        .map(|m| m.trim().to_string())
                        .filter(|m| !m.is_empty())
                        .or_else(|| {
                            (severity == Severity::Illegal)
                                .then(|| ILLEGAL_BLOCK_MESSAGE.to_string())
                        }),
                    alert,
                    term_alert,
                    alert_on_allow: cat.alert_on_allow,
                    locked: cat.locked || severity == Severity::Illegal,
                },
                list_dir,
            });
        }
        let ids = defs
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((c.category.name.clone(), CategoryId::new(i)?)))
            .collect();
        let known = known(defs.iter().map(|c| c.category.name.as_str()));
        Categories {
            defs,
            illegal,
            ids,
            known,
        }
    }

    fn schedules(
        &mut self,
        raw: BTreeMap<Name, RawSchedule>,
        school_tz: chrono_tz::Tz,
    ) -> (Vec<Schedule>, HashMap<String, ScheduleId>) {
        let mut schedules = Vec::new();
        let mut ids = HashMap::new();
        for (name, sched) in raw {
            let tz = match &sched.timezone {
                Some(tz) => match parse_tz(tz.get_ref()) {
                    Ok(tz) => tz,
                    Err(e) => {
                        self.invalid(tz.span(), e.to_string());
                        continue;
                    }
                },
                None => school_tz,
            };
            let mut windows = Vec::new();
            for w in &sched.windows {
                match Window::parse(w.get_ref()) {
                    Ok(window) => windows.push(window),
                    Err(e) => self.invalid(w.span(), format!("schedule {:?}: {e}", name.get_ref())),
                }
            }
            if sched.windows.is_empty() {
                self.invalid(
                    name.span(),
                    format!("schedule {:?} has no windows", name.get_ref()),
                );
            }
            ids.insert(name.get_ref().clone(), ScheduleId::new(schedules.len()));
            schedules.push(Schedule {
                name: name.into_inner(),
                tz,
                windows,
            });
        }
        (schedules, ids)
    }

    fn category(&mut self, categories: &Categories, name: &Name) -> Option<CategoryId> {
        let id = categories.ids.get(name.get_ref()).copied();
        if id.is_none() {
            self.errors.push(self.source.error_at(
                name.span(),
                ConfigErrorKind::UnknownCategory {
                    name: name.get_ref().clone(),
                    known: categories.known.clone(),
                },
            ));
        }
        id
    }

    /// Groups, in the order the file declares them.
    fn groups(
        &mut self,
        raw: BTreeMap<Name, RawGroup>,
        categories: &Categories,
        schedule_ids: &HashMap<String, ScheduleId>,
        schedules: &[Schedule],
    ) -> Groups {
        let mut raw_groups: Vec<_> = raw.into_iter().collect();
        raw_groups.sort_by_key(|(name, _)| name.span().start);
        let ids = raw_groups
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.get_ref().clone(), GroupId::new(i)))
            .collect();
        let known_groups = known(raw_groups.iter().map(|(n, _)| n.get_ref().as_str()));
        let known_schedules = known(schedules.iter().map(|s| s.name.as_str()));
        let mut groups = Vec::new();
        let mut allow_site_lines = Vec::new();
        for (gi, (name, g)) in raw_groups.into_iter().enumerate() {
            let group = self.group(
                GroupId::new(gi),
                name,
                g,
                categories,
                schedule_ids,
                &known_schedules,
                &mut allow_site_lines,
            );
            groups.push(group);
        }
        Groups {
            groups,
            ids,
            known: known_groups,
            allow_site_lines,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn group(
        &mut self,
        id: GroupId,
        name: Name,
        g: RawGroup,
        categories: &Categories,
        schedule_ids: &HashMap<String, ScheduleId>,
        known_schedules: &str,
        allow_site_lines: &mut Vec<(GroupId, usize, usize)>,
    ) -> Group {
        let gname = name.get_ref().clone();
        if let Err(why) = check_name(&gname) {
            self.invalid(name.span(), format!("group name {gname:?}: {why}"));
        }
        let mode = match g.mode.get_ref().as_str() {
            "blocklist" => Mode::Blocklist,
            "allowlist" => Mode::Allowlist,
            other => {
                self.invalid(
                    g.mode.span(),
                    format!(
                        "group {gname:?}: mode {other:?} is not \"blocklist\" or \"allowlist\""
                    ),
                );
                Mode::Blocklist
            }
        };
        // Each category once per group, in one of block, allow and allow_during.
        let mut seen: HashMap<CategoryId, &'static str> = HashMap::new();
        let mut note = |c: &mut Compiler, id: CategoryId, field: &'static str, at: &Name| {
            let Some(prev) = seen.insert(id, field) else {
                return true;
            };
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
            c.errors.push(
                c.source
                    .error_at(at.span(), ConfigErrorKind::Duplicate(what)),
            );
            false
        };
        let illegal_allowed = |c: &mut Compiler, at: &Name, what: String| {
            c.errors.push(
                c.source
                    .error_at(at.span(), ConfigErrorKind::IllegalAllowed(what)),
            );
        };
        let mut block = CategorySet::EMPTY;
        for cat in &g.block {
            if let Some(cid) = self.category(categories, cat) {
                if note(self, cid, "block", cat) {
                    block.insert(cid);
                }
            }
        }
        let mut allow = CategorySet::EMPTY;
        for cat in &g.allow {
            let Some(cid) = self.category(categories, cat) else {
                continue;
            };
            if categories.illegal.contains(cid) {
                illegal_allowed(
                    self,
                    cat,
                    format!(
                        "group {gname:?} allows {:?}, an illegal category: illegal categories are blocked for every group",
                        cat.get_ref()
                    ),
                );
            } else if note(self, cid, "allow", cat) {
                allow.insert(cid);
            }
        }
        let mut allow_during = Vec::new();
        for (cat, s) in &g.allow_during {
            let Some(cid) = self.category(categories, cat) else {
                continue;
            };
            if categories.illegal.contains(cid) {
                illegal_allowed(
                    self,
                    cat,
                    format!(
                        "group {gname:?} allows {:?} during {:?}, but it is an illegal category: illegal categories are blocked for every group at all times",
                        cat.get_ref(),
                        s.get_ref()
                    ),
                );
                continue;
            }
            if !note(self, cid, "allow_during", cat) {
                continue;
            }
            match schedule_ids.get(s.get_ref()) {
                Some(&sid) => allow_during.push((cid, sid)),
                None => self.errors.push(self.source.error_at(
                    s.span(),
                    ConfigErrorKind::UnknownSchedule {
                        name: s.get_ref().clone(),
                        known: known_schedules.to_string(),
                    },
                )),
            }
        }
        let (allow_sites, lines) = self.site_list(&gname, "allow_sites", &g.allow_sites);
        allow_site_lines.extend(lines.into_iter().map(|(index, line)| (id, index, line)));
        let block_sites = self.site_list(&gname, "block_sites", &g.block_sites).0;
        for (i, a) in allow_sites.entries().iter().enumerate() {
            if let Some(b) = block_sites
                .entries()
                .iter()
                .find(|b| b.host == a.host && b.path == a.path)
            {
                let span = g.allow_sites[i].span();
                self.errors.push(self.source.error_at(
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
                self.invalid(
                    span,
                    format!(
                        "group {gname:?}: on_log_failure {other:?} is not \"block\" or \"allow\""
                    ),
                );
                true
            }
        };
        let safe_search = GroupSafeSearch {
            // On unless the group says otherwise: a new group, or a policy written before
            // the setting, is never less safe than a pupil group.
            search: g.safe_search.unwrap_or(true).then_some(Level::Strict),
            youtube: match g.youtube_restrict.as_ref().map(|v| v.get_ref().as_str()) {
                None | Some("strict") => Some(Level::Strict),
                Some("moderate") => Some(Level::Moderate),
                Some("off") => None,
                Some(other) => {
                    let span = g
                        .youtube_restrict
                        .as_ref()
                        .map(|v| v.span())
                        .unwrap_or(0..0);
                    self.invalid(
                        span,
                        format!(
                            "group {gname:?}: youtube_restrict {other:?} is not \"strict\", \"moderate\" or \"off\""
                        ),
                    );
                    Some(Level::Strict)
                }
            },
        };
        let controls = self.controls(&gname, &g, safe_search);
        Group {
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
            controls,
            safe_search,
            inspect_tls: g.inspect_tls.unwrap_or(false),
        }
    }

    /// A group's header and parameter controls.
    fn controls(&mut self, gname: &str, g: &RawGroup, safe_search: GroupSafeSearch) -> Controls {
        let mut list = |field: &str, entries: &[toml::Spanned<String>]| -> Option<String> {
            let mut kept = Vec::new();
            for e in entries {
                let v = e.get_ref().trim();
                // A header value: no commas inside an entry (they separate entries), and
                // only visible ASCII (RFC 9110 §5.5).
                if v.is_empty() || v.contains(',') || !v.bytes().all(|b| b.is_ascii_graphic()) {
                    self.invalid(
                        e.span(),
                        format!("group {gname:?}: {field} entry {:?} is not a domain or id (no spaces or commas)", e.get_ref()),
                    );
                } else {
                    kept.push(v.to_string());
                }
            }
            (!kept.is_empty()).then(|| kept.join(","))
        };
        let tenants = list("microsoft_tenants", &g.microsoft_tenants);
        let google_domains = list("google_allowed_domains", &g.google_allowed_domains);
        let context = g.microsoft_tenant_context.as_ref().and_then(|c| {
            let v = c.get_ref().trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
                self.invalid(
                    c.span(),
                    format!(
                        "group {gname:?}: microsoft_tenant_context {:?} is not a directory id",
                        c.get_ref()
                    ),
                );
                None
            } else {
                Some(v.to_string())
            }
        });
        let microsoft = match (tenants, context) {
            (Some(tenants), Some(context)) => Some(TenantRestriction { tenants, context }),
            (None, None) => None,
            (Some(_), None) => {
                let span = g
                    .microsoft_tenants
                    .first()
                    .map(|e| e.span())
                    .unwrap_or(0..0);
                self.invalid(span, format!("group {gname:?}: microsoft_tenants needs microsoft_tenant_context (the school's directory id), which Microsoft requires with it"));
                None
            }
            (None, Some(_)) => {
                let span = g
                    .microsoft_tenant_context
                    .as_ref()
                    .map(|e| e.span())
                    .unwrap_or(0..0);
                self.invalid(span, format!("group {gname:?}: microsoft_tenant_context without microsoft_tenants restricts nothing"));
                None
            }
        };
        Controls {
            // As the group's safe_search unless it says: a group without safe search
            // gets none of it by this route either.
            google_safe: g.google_safe_active.unwrap_or(safe_search.search.is_some()),
            youtube: if g.youtube_restrict_header.unwrap_or(true) {
                safe_search.youtube
            } else {
                None
            },
            microsoft,
            google_domains,
        }
    }

    /// `[inspection] never_inspect_categories` and `never_inspect_sites`.
    fn inspection(&mut self, raw: &RawInspection, categories: &Categories) -> InspectionRules {
        let mut rules = InspectionRules::default();
        for name in &raw.never_inspect_categories {
            if let Some(id) = self.category(categories, name) {
                if categories.illegal.contains(id) {
                    self.invalid(
                        name.span(),
                        format!("[inspection] never_inspect_categories: {:?} is an illegal category; its listed pages are what inspection is for", name.get_ref()),
                    );
                } else {
                    rules.never_categories.insert(id);
                }
            }
        }
        for e in &raw.never_inspect_sites {
            match SiteEntry::parse(e.get_ref()) {
                Ok(entry) => rules.never_sites.push(entry),
                Err(why) => self.invalid(
                    e.span(),
                    format!(
                        "[inspection] never_inspect_sites entry {:?}: {why}",
                        e.get_ref()
                    ),
                ),
            }
        }
        rules
    }

    /// A group's `allow_sites` or `block_sites`, with each kept entry's line.
    fn site_list(
        &mut self,
        group: &str,
        field: &str,
        entries: &[toml::Spanned<String>],
    ) -> (SiteList, Vec<(usize, usize)>) {
        let mut list = SiteList::default();
        let mut lines = Vec::new();
        for e in entries {
            match SiteEntry::parse(e.get_ref()) {
                Ok(entry) => {
                    lines.push((list.entries().len(), self.source.line_of(e.span().start)));
                    list.push(entry)
                }
                Err(why) => self.invalid(
                    e.span(),
                    format!("group {group:?}: {field} entry {:?}: {why}", e.get_ref()),
                ),
            }
        }
        (list, lines)
    }

    fn group_of(&mut self, groups: &Groups, name: &Name, src: &Source) -> Option<GroupId> {
        let id = groups.ids.get(name.get_ref()).copied();
        if id.is_none() {
            self.errors.push(src.error_at(
                name.span(),
                ConfigErrorKind::UnknownGroup {
                    name: name.get_ref().clone(),
                    known: groups.known.clone(),
                },
            ));
        }
        id
    }

    /// Subnets and users; `None` when the default group does not resolve.
    fn identity(
        &mut self,
        raw: &RawIdentity,
        users: Option<(RawUsers, &Source)>,
        groups: &Groups,
    ) -> Option<Identity> {
        let source = self.source;
        let default_group = self.group_of(groups, &raw.default_group, source);
        let mut subnets = Vec::new();
        let mut seen_nets: BTreeMap<IpNet, usize> = BTreeMap::new();
        for s in &raw.subnets {
            let net: Option<IpNet> = match s.cidr.get_ref().parse::<IpNet>() {
                Ok(n) => Some(n.trunc()),
                Err(_) => match s.cidr.get_ref().parse::<IpAddr>() {
                    Ok(ip) => Some(IpNet::from(ip)),
                    Err(_) => {
                        self.invalid(
                            s.cidr.span(),
                            format!(
                                "subnet {:?} is not a network in CIDR form (e.g. \"10.20.0.0/16\")",
                                s.cidr.get_ref()
                            ),
                        );
                        None
                    }
                },
            };
            if let Some(net) = net {
                let line = source.line_of(s.cidr.span().start);
                if let Some(prev) = seen_nets.insert(net, line) {
                    self.errors.push(source.error_at(
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
                    self.invalid(
                        span,
                        format!("auth {other:?} is not \"none\" or \"required\""),
                    );
                    AuthRequirement::None
                }
            };
            let group = self.group_of(groups, &s.group, source);
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
                    self.errors.push(users_source.error_at(
                        u.name.span(),
                        ConfigErrorKind::Duplicate(format!(
                            "user {:?} is already defined on line {prev}",
                            u.name.get_ref()
                        )),
                    ));
                    continue;
                }
                if let Some(group) = self.group_of(groups, &u.group, users_source) {
                    user_list.push(User {
                        name: u.name.into_inner(),
                        group,
                        password_hash: u.password_hash,
                    });
                }
            }
        }
        let directory = raw
            .directory
            .as_ref()
            .map(|d| self.directory_mapping(d, groups));
        let devices = self.devices(raw);
        let identity = Identity::new(default_group?, subnets, user_list).with_devices(devices);
        Some(match directory {
            Some(mapping) => identity.with_directory(mapping),
            None => identity,
        })
    }

    /// `[[identity.devices]]`: each an address or subnet, once, and a name a log can hold.
    fn devices(&mut self, raw: &RawIdentity) -> Vec<DeviceRule> {
        let source = self.source;
        let mut devices = Vec::new();
        let mut seen: BTreeMap<IpNet, usize> = BTreeMap::new();
        for d in &raw.devices {
            let text = d.address.get_ref();
            let net = match text.parse::<IpAddr>() {
                Ok(ip) => Some(IpNet::from(crate::core::identity::canonical_ip(ip))),
                Err(_) => match text.parse::<IpNet>() {
                    Ok(n) => Some(n.trunc()),
                    Err(_) => {
                        self.invalid(
                            d.address.span(),
                            format!(
                                "device address {text:?} is not an address (\"10.20.3.17\") or a network in CIDR form (\"10.20.3.0/28\")"
                            ),
                        );
                        None
                    }
                },
            };
            let name = match device_name(d.name.get_ref()) {
                Ok(name) => Some(name),
                Err(e) => {
                    self.invalid(d.name.span(), format!("{e}: {:?}", d.name.get_ref()));
                    None
                }
            };
            let Some(net) = net else { continue };
            let line = source.line_of(d.address.span().start);
            if let Some(prev) = seen.insert(net, line) {
                self.errors.push(source.error_at(
                    d.address.span(),
                    ConfigErrorKind::Duplicate(format!(
                        "device address {net} is already named on line {prev}"
                    )),
                ));
                continue;
            }
            if let Some(name) = name {
                devices.push(DeviceRule { net, name });
            }
        }
        devices
    }

    /// `[identity.directory]`'s group rules, in file order, each naming a defined group.
    fn directory_mapping(&mut self, raw: &RawDirectory, groups: &Groups) -> GroupMapping {
        let source = self.source;
        let mut rules = Vec::new();
        let mut seen: HashMap<GroupPattern, usize> = HashMap::new();
        for r in &raw.groups {
            let Some(pattern) = GroupPattern::parse(r.directory.get_ref()) else {
                self.invalid(
                    r.directory.span(),
                    "directory group is empty: give a DN (\"CN=Year 7,OU=Pupils,DC=school,DC=local\") or a CN (\"Year 7\")".into(),
                );
                continue;
            };
            let line = source.line_of(r.directory.span().start);
            if let Some(prev) = seen.insert(pattern.clone(), line) {
                // The later rule could never match: the first one always wins.
                self.errors.push(source.error_at(
                    r.directory.span(),
                    ConfigErrorKind::Duplicate(format!(
                        "directory group {:?} is already mapped on line {prev}; the first rule always wins",
                        r.directory.get_ref()
                    )),
                ));
                continue;
            }
            if let Some(group) = self.group_of(groups, &r.group, source) {
                rules.push(GroupRule {
                    pattern,
                    group,
                    text: r.directory.get_ref().trim().to_string(),
                });
            }
        }
        let unmapped = match raw.unmapped.as_ref().map(|u| u.get_ref().as_str()) {
            None | Some("default") => Unmapped::Default,
            Some("refuse") => Unmapped::Refuse,
            Some(other) => {
                let span = raw.unmapped.as_ref().map(|u| u.span()).unwrap_or(0..0);
                self.invalid(
                    span,
                    format!("unmapped {other:?} is not \"default\" or \"refuse\""),
                );
                Unmapped::Default
            }
        };
        GroupMapping { rules, unmapped }
    }

    /// The safe-search engine table: the shipped engines, each changed by the fields an
    /// entry of the same name gives, then the school's own engines in file order. A host
    /// that two engines would claim is refused: which name a request is dialled to must
    /// not depend on the order of the table.
    fn safe_search(&mut self, raw: RawSafeSearch) -> Engines {
        let mut engines = safe_search::default_engines();
        // Where each engine's hosts were written (`None`: a shipped default), for errors.
        let mut host_spans: Vec<Vec<Option<std::ops::Range<usize>>>> =
            engines.iter().map(|e| vec![None; e.hosts.len()]).collect();
        let mut raw_engines: Vec<_> = raw.engines.into_iter().collect();
        raw_engines.sort_by_key(|(name, _)| name.span().start);
        for (name, e) in raw_engines {
            let ename = name.get_ref().clone();
            if let Err(why) = check_name(&ename) {
                self.invalid(
                    name.span(),
                    format!("safe-search engine name {ename:?}: {why}"),
                );
            }
            let setting = e.setting.as_ref().and_then(|s| match Setting::parse(s.get_ref()) {
                Some(setting) => Some(setting),
                None => {
                    self.invalid(
                        s.span(),
                        format!(
                            "safe-search engine {ename:?}: setting {:?} is not \"safe_search\" or \"youtube_restrict\"",
                            s.get_ref()
                        ),
                    );
                    None
                }
            });
            let address = |c: &mut Compiler, field: &str, value: &Option<toml::Spanned<String>>| {
                let v = value.as_ref()?;
                safe_search::parse_address(v.get_ref())
                    .map_err(|e| {
                        c.invalid(
                            v.span(),
                            format!("safe-search engine {ename:?}: {field}: {e}"),
                        )
                    })
                    .ok()
            };
            let strict = address(self, "strict", &e.strict);
            let moderate = address(self, "moderate", &e.moderate);
            let hosts = e.hosts.as_ref().map(|hosts| {
                let mut parsed = Vec::new();
                for h in hosts {
                    match HostPattern::parse(h.get_ref()) {
                        Ok(p) => parsed.push((p, Some(h.span()))),
                        Err(err) => {
                            self.invalid(h.span(), format!("safe-search engine {ename:?}: {err}"))
                        }
                    }
                }
                parsed
            });
            let (engine, spans) = match engines.iter().position(|d| d.name == ename) {
                // A shipped engine: the fields given replace the defaults'.
                Some(i) => (&mut engines[i], &mut host_spans[i]),
                None => {
                    let missing: Vec<&str> = [
                        ("setting", e.setting.is_none()),
                        ("hosts", e.hosts.is_none()),
                        ("strict", e.strict.is_none()),
                    ]
                    .into_iter()
                    .filter_map(|(field, absent)| absent.then_some(field))
                    .collect();
                    if !missing.is_empty() {
                        self.invalid(
                            name.span(),
                            format!(
                                "safe-search engine {ename:?} is not a shipped one (google, youtube, bing, duckduckgo), so it needs {}",
                                missing.join(", ")
                            ),
                        );
                    }
                    let (Some(setting), Some(strict)) = (setting, strict.clone()) else {
                        continue;
                    };
                    engines.push(Engine {
                        name: ename.clone(),
                        setting,
                        hosts: Vec::new(),
                        strict,
                        moderate: None,
                    });
                    host_spans.push(Vec::new());
                    let last = engines.len() - 1;
                    (&mut engines[last], &mut host_spans[last])
                }
            };
            if let Some(setting) = setting {
                engine.setting = setting;
            }
            if let Some(strict) = strict {
                engine.strict = strict;
            }
            if let Some(moderate) = moderate {
                engine.moderate = Some(moderate);
            }
            if let Some(hosts) = hosts {
                (engine.hosts, *spans) = hosts.into_iter().unzip();
            }
            if engine.setting == Setting::SafeSearch {
                // A search engine is on (strict) or off: a moderate address would never be
                // dialled, so one written here is a mistake worth saying.
                engine.moderate = None;
                if let Some(m) = &e.moderate {
                    self.invalid(
                        m.span(),
                        format!(
                            "safe-search engine {ename:?}: only youtube_restrict engines have a moderate address (safe_search is on, which is strict, or off)"
                        ),
                    );
                }
            }
        }
        self.check_engine_hosts(&engines, &host_spans);
        Engines::new(engines)
    }

    /// Refuses a host that two engines claim, by the same pattern or an exact name that
    /// another engine's country ending covers.
    fn check_engine_hosts(
        &mut self,
        engines: &[Engine],
        spans: &[Vec<Option<std::ops::Range<usize>>>],
    ) {
        let mut claimed: Vec<(&HostPattern, &str, Option<std::ops::Range<usize>>)> = Vec::new();
        for (engine, spans) in engines.iter().zip(spans) {
            for (pattern, span) in engine.hosts.iter().zip(spans) {
                let clash = claimed.iter().find(|(other, owner, _)| {
                    *owner != engine.name
                        && match (pattern, *other) {
                            (HostPattern::Name(n), p) | (p, HostPattern::Name(n)) => p.matches(n),
                            (a, b) => a == b,
                        }
                });
                if let Some((other, owner, other_span)) = clash {
                    let what = format!(
                        "safe-search engines {owner:?} ({other}) and {:?} ({pattern}) both claim the same host; a host belongs to one engine",
                        engine.name
                    );
                    let kind = ConfigErrorKind::Duplicate(what);
                    let error = match span.clone().or(other_span.clone()) {
                        Some(span) => self.source.error_at(span, kind),
                        None => self.source.error(kind),
                    };
                    self.errors.push(error);
                }
                claimed.push((pattern, engine.name.as_str(), span.clone()));
            }
        }
    }

    /// `[teachers]`: the lesson schedule (named, or `lessons` if there is one), the
    /// longest override, the classrooms and their networks.
    fn teachers(
        &mut self,
        raw: &RawTeachers,
        schedule_ids: &HashMap<String, ScheduleId>,
        group_ids: &HashMap<String, GroupId>,
    ) -> TeacherRules {
        let lessons = match &raw.lessons {
            Some(name) => match schedule_ids.get(name.get_ref()) {
                Some(id) => Some(*id),
                None => {
                    self.errors.push(self.source.error_at(
                        name.span(),
                        ConfigErrorKind::UnknownSchedule {
                            name: name.get_ref().clone(),
                            known: known(schedule_ids.keys().map(String::as_str)),
                        },
                    ));
                    None
                }
            },
            None => schedule_ids.get("lessons").copied(),
        };
        let max_minutes = match &raw.max_minutes {
            Some(m) if *m.get_ref() == 0 || *m.get_ref() > 24 * 60 => {
                self.invalid(
                    m.span(),
                    format!(
                        "max_minutes {} must be from 1 to 1440 (a school day at most)",
                        m.get_ref()
                    ),
                );
                60
            }
            Some(m) => *m.get_ref(),
            None => 60,
        };
        let mut classrooms = Vec::new();
        for (name, room) in &raw.classrooms {
            if let Err(why) = check_name(name.get_ref()) {
                self.invalid(
                    name.span(),
                    format!("classroom name {:?}: {why}", name.get_ref()),
                );
            }
            if room.subnets.is_empty() {
                self.invalid(
                    name.span(),
                    format!(
                        "classroom {:?} has no subnets: say which networks its devices are on",
                        name.get_ref()
                    ),
                );
            }
            let mut subnets = Vec::new();
            for net in &room.subnets {
                match net
                    .get_ref()
                    .parse::<IpNet>()
                    .or_else(|_| net.get_ref().parse::<IpAddr>().map(IpNet::from))
                {
                    Ok(n) => subnets.push(n.trunc()),
                    Err(_) => self.invalid(
                        net.span(),
                        format!(
                            "classroom {:?}: subnet {:?} is not a network in CIDR form",
                            name.get_ref(),
                            net.get_ref()
                        ),
                    ),
                }
            }
            classrooms.push(Classroom {
                name: name.get_ref().clone(),
                subnets,
            });
        }
        let mut directory = Vec::new();
        for rule in &raw.directory {
            let Some(pattern) = GroupPattern::parse(rule.directory.get_ref()) else {
                self.invalid(
                    rule.directory.span(),
                    "[[teachers.directory]]: directory must name a group (a DN or a CN)".into(),
                );
                continue;
            };
            if rule.classrooms.is_empty() && rule.groups.is_empty() {
                self.invalid(
                    rule.directory.span(),
                    format!(
                        "[[teachers.directory]] {:?} names no classrooms or groups its teachers may act for",
                        rule.directory.get_ref()
                    ),
                );
                continue;
            }
            for c in &rule.classrooms {
                if !classrooms.iter().any(|r| r.name == *c.get_ref()) {
                    self.invalid(
                        c.span(),
                        format!("no classroom {:?} in [teachers.classrooms]", c.get_ref()),
                    );
                }
            }
            for g in &rule.groups {
                if !group_ids.contains_key(g.get_ref()) {
                    self.invalid(
                        g.span(),
                        format!("no group {:?} in the policy", g.get_ref()),
                    );
                }
            }
            directory.push((
                pattern,
                crate::core::grants::TeacherScope {
                    classrooms: rule
                        .classrooms
                        .iter()
                        .map(|c| c.get_ref().clone())
                        .collect(),
                    groups: rule.groups.iter().map(|g| g.get_ref().clone()).collect(),
                },
            ));
        }
        TeacherRules {
            lessons,
            max_duration: chrono::Duration::minutes(i64::from(max_minutes)),
            classrooms,
            directory,
        }
    }

    fn grant_rules(&mut self, raw: &RawGrantRules) -> GrantRules {
        let pattern_text = raw
            .ticket_pattern
            .as_ref()
            .map(|p| p.get_ref().clone())
            .unwrap_or_else(|| "^[A-Z]+-[0-9]+$".to_string());
        let ticket_pattern = match regex::Regex::new(&pattern_text) {
            Ok(r) => r,
            Err(e) => {
                let span = raw
                    .ticket_pattern
                    .as_ref()
                    .map(|p| p.span())
                    .unwrap_or(0..0);
                self.invalid(span, format!("ticket_pattern: {e}"));
                regex::Regex::new("^$").expect("the empty pattern compiles")
            }
        };
        GrantRules {
            file: self.base.join(raw.file.as_deref().unwrap_or("grants.toml")),
            ticket_pattern,
            max_duration: chrono::Duration::days(i64::from(raw.max_days.unwrap_or(30).max(1))),
        }
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
