//! Grants: ticketed, time-boxed unblocks.
//!
//! A technician lifts the filter for some requesters (groups, users, client subnets) and
//! some targets (sites, URL prefixes, categories) for a period of study, against a
//! helpdesk ticket. A [`Grant`] can only be built through [`Grant::new`], which refuses
//! anything that would reach an `illegal` category, so the decision code never has to
//! ask. Expiry is checked when deciding, against the time passed in, not when loading.
//!
//! A teacher's **lesson override** is a grant of a second kind ([`GrantKind::Lesson`]):
//! no ticket, for the teacher's classrooms (their networks) and classes (groups), until
//! the end of the current lesson and never longer than `[teachers] max_minutes`, and it
//! may *block* as well as allow. It may never name a `locked` or `illegal` category,
//! nor open a site that is in one. [`lesson_expiry`] says when one asked for now ends,
//! and [`TeacherScope::permits`] whether a teacher may act for the rooms and groups asked.
//!
//! Pure: no I/O, no clock. The grants file, its watcher and the commands come with the
//! grants issue; here grants are a type and an input to [`crate::core::policy::Policy::decide`].

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::core::category::CategorySet;
use crate::core::classify::CompiledLists;
use crate::core::config::{ConfigError, ConfigErrorKind, ConfigErrors, Source};
use crate::core::group::GroupId;
use crate::core::host::Target;
use crate::core::policy::Policy;
use crate::core::site::{SiteError, SiteList};

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// No ticket, or one that does not match the policy's ticket pattern.
    #[error("ticket {0:?} does not look like a helpdesk ticket (it must match {1})")]
    Ticket(String, String),
    /// The reason is empty or a placeholder.
    #[error("a grant needs a real reason (got {0:?})")]
    Reason(String),
    /// No issuer named.
    #[error("a grant must name who issued it")]
    IssuedBy,
    /// Neither groups, users nor subnets.
    #[error("a grant must name at least one group, user or subnet it applies to")]
    EmptyScope,
    /// Neither sites nor categories.
    #[error("a grant must name at least one site, URL or category it unblocks")]
    EmptyTarget,
    /// `expires` not after `starts`.
    #[error("a grant must expire after it starts")]
    Period,
    /// Longer than the policy allows.
    #[error("a grant may last at most {0} days (the policy's max_days)")]
    TooLong(i64),
    /// A site or URL that is not a valid host or host/path.
    #[error(transparent)]
    Site(#[from] SiteError),
    /// A target that reaches an `illegal` category.
    #[error("{0} is in the illegal category {1}: no grant can unblock it")]
    Illegal(String, String),
    /// A lesson override that names an illegal category or opens a site in one.
    #[error("{0}: {1} is an illegal category, blocked for everyone, always; no teacher override can change that")]
    LessonIllegal(String, String),
    /// A lesson override that names a locked category or opens a site in one.
    #[error("{0}: {1} is a locked category; teachers cannot override it (ask the DSL or IT)")]
    Locked(String, String),
    /// A lesson override longer than `[teachers] max_minutes`.
    #[error(
        "a lesson override may last at most {0} minutes (the policy's [teachers] max_minutes)"
    )]
    LessonTooLong(i64),
    /// A classroom the policy does not define.
    #[error("no classroom {0:?} in [teachers.classrooms] (known: {1})")]
    UnknownClassroom(String, String),
    /// A lesson override with a ticket, or a ticketed grant written as a lesson's.
    #[error("a lesson override has no ticket (it is a teacher's, for one lesson)")]
    LessonTicket,
    /// A ticketed grant naming classrooms (only lesson overrides have them).
    #[error(
        "classrooms are for lesson overrides (kind = \"lesson\"); a ticketed grant names subnets"
    )]
    ClassroomsForLessons,
    /// A lesson override for users or raw networks rather than classrooms and groups.
    #[error("a lesson override is for classrooms and groups (classes), not users or networks")]
    LessonScope,
}

/// What a lesson override does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Opens sites or categories for the lesson.
    Allow,
    /// Closes sites or categories for the lesson.
    Block,
}

impl Effect {
    /// `allow` / `block`, as the grants file and the API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Block => "block",
        }
    }

    /// The effect a word names.
    pub fn parse(text: &str) -> Option<Effect> {
        match text {
            "allow" => Some(Effect::Allow),
            "block" => Some(Effect::Block),
            _ => None,
        }
    }
}

/// A technician's ticketed unblock, or a teacher's lesson override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// Against a helpdesk ticket, up to `[grants] max_days`; only ever allows.
    Ticketed,
    /// A teacher's, for one lesson, no ticket; allows or blocks.
    Lesson(Effect),
}

impl GrantKind {
    /// Whether this is a lesson override that blocks.
    pub fn is_lesson_block(self) -> bool {
        self == GrantKind::Lesson(Effect::Block)
    }
}

/// The prefix of the stand-in ticket of a lesson override (`lesson:g-12`): what the
/// decision log's grant field and the audit trail's ticket field hold for one, so the
/// report can tell teachers' overrides from technicians' grants.
pub const LESSON_TICKET_PREFIX: &str = "lesson:";

/// Whether a ticket as logged is a lesson override's stand-in.
pub fn is_lesson_ticket(ticket: &str) -> bool {
    ticket.starts_with(LESSON_TICKET_PREFIX)
}

/// The classrooms and groups a teacher may act for (from their admin token).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeacherScope {
    /// Classroom names.
    pub classrooms: Vec<String>,
    /// Group names.
    pub groups: Vec<String>,
}

impl TeacherScope {
    /// `Ok` when every classroom and group asked for is the teacher's, and at least one
    /// is asked for; otherwise the first that is not, in words.
    pub fn permits(&self, classrooms: &[String], groups: &[String]) -> Result<(), String> {
        if classrooms.is_empty() && groups.is_empty() {
            return Err("name the classroom(s) or class group(s) the override is for".into());
        }
        if let Some(c) = classrooms.iter().find(|c| !self.classrooms.contains(c)) {
            return Err(format!(
                "classroom {c:?} is not one of yours (you may act for: {})",
                self.describe()
            ));
        }
        if let Some(g) = groups.iter().find(|g| !self.groups.contains(g)) {
            return Err(format!(
                "group {g:?} is not one of your classes (you may act for: {})",
                self.describe()
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let text = describe_terms(&[
            ("classrooms", self.classrooms.clone()),
            ("groups", self.groups.clone()),
        ]);
        if text.is_empty() {
            "nothing".into()
        } else {
            text
        }
    }
}

/// When a lesson override asked for at `now` ends: the end of the current lesson (the
/// `[teachers]` lesson schedule's window), capped at `max_minutes` and at the minutes
/// the teacher asked for. Outside a lesson (or with no lesson schedule) it lasts the
/// minutes asked for, or `max_minutes`, so a club after school can still have one.
pub fn lesson_expiry(
    policy: &Policy,
    now: DateTime<Utc>,
    minutes: Option<u32>,
) -> Result<DateTime<Utc>, GrantError> {
    let max = policy.teachers.max_duration;
    let asked = match minutes {
        Some(0) => return Err(GrantError::Period),
        Some(m) => chrono::Duration::minutes(i64::from(m)),
        None => max,
    };
    if asked > max {
        return Err(GrantError::LessonTooLong(max.num_minutes()));
    }
    let mut end = now + asked;
    if let Some(lesson_end) = policy
        .teachers
        .lessons
        .and_then(|s| policy.schedule(s).current_window_end(now))
    {
        end = end.min(lesson_end);
    }
    Ok(end)
}

/// Who a grant applies to.
#[derive(Debug, Clone, Default)]
pub struct GrantScope {
    /// Groups it applies to.
    pub groups: Vec<GroupId>,
    /// Proxy-authenticated users it applies to.
    pub users: Vec<String>,
    /// Client networks it applies to.
    pub subnets: Vec<IpNet>,
}

/// A grant, validated.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Stable identifier.
    pub id: Arc<str>,
    /// Ticketed, or a teacher's lesson override (allow or block).
    pub kind: GrantKind,
    /// Helpdesk ticket reference (`HD-4411`); for a lesson override, `lesson:<id>`.
    pub ticket: Arc<str>,
    /// For a lesson override: the classrooms it is for (their networks are in `scope`).
    pub classrooms: Vec<String>,
    /// Technician who issued it.
    pub issued_by: String,
    /// Why (the period of study).
    pub reason: String,
    /// Who it applies to.
    pub scope: GrantScope,
    /// Sites and URL prefixes it opens.
    pub sites: SiteList,
    /// Categories it opens.
    pub categories: CategorySet,
    /// When it starts to apply.
    pub starts: DateTime<Utc>,
    /// When it stops applying.
    pub expires: DateTime<Utc>,
}

/// A grant as requested, before validation.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// Identifier.
    pub id: String,
    /// Ticketed or a lesson override.
    pub kind: GrantKind,
    /// Ticket reference (empty for a lesson override).
    pub ticket: String,
    /// Classrooms (lesson overrides only), resolved to their networks.
    pub classrooms: Vec<String>,
    /// Issuer.
    pub issued_by: String,
    /// Reason.
    pub reason: String,
    /// Scope.
    pub scope: GrantScope,
    /// Sites and URL prefixes (`example.com`, `example.com/unit/`).
    pub sites: Vec<String>,
    /// Category names.
    pub categories: CategorySet,
    /// Start.
    pub starts: DateTime<Utc>,
    /// Expiry.
    pub expires: DateTime<Utc>,
}

/// Reasons that say nothing, refused so that the audit trail means something.
const PLACEHOLDER_REASONS: &[&str] = &[
    "", "-", "n/a", "na", "none", "tbc", "todo", "test", "x", "reason", "asdf", ".",
];

/// A grant's scope or target in words: the non-empty parts as `label a, b`, joined by
/// `; ` (`groups ks4; users j.bloggs`).
pub fn describe_terms(parts: &[(&str, Vec<String>)]) -> String {
    parts
        .iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(label, names)| format!("{label} {}", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Grant {
    /// Who the grant covers and what it opens, in words for the audit trail and the
    /// report: (`groups ks4; users j.bloggs`, `sites bbc.co.uk/news; categories video`).
    pub fn terms(&self, policy: &Policy) -> (String, String) {
        let scope = describe_terms(&[
            (
                "groups",
                self.scope
                    .groups
                    .iter()
                    .map(|g| policy.group(*g).name.clone())
                    .collect(),
            ),
            ("classrooms", self.classrooms.clone()),
            ("users", self.scope.users.clone()),
            (
                "networks",
                // A lesson override's networks are its classrooms'.
                if self.classrooms.is_empty() {
                    self.scope.subnets.iter().map(|n| n.to_string()).collect()
                } else {
                    Vec::new()
                },
            ),
        ]);
        let target = describe_terms(&[
            (
                "sites",
                self.sites
                    .entries()
                    .iter()
                    .map(|e| e.text.clone())
                    .collect(),
            ),
            (
                "categories",
                policy
                    .category_names(self.categories)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            ),
        ]);
        (scope, target)
    }

    /// Validates a request against the policy and its lists. Refuses any target that an
    /// `illegal` list matches or that names an `illegal` category.
    pub fn new(
        req: GrantRequest,
        policy: &Policy,
        lists: &CompiledLists,
    ) -> Result<Grant, GrantError> {
        if let GrantKind::Lesson(effect) = req.kind {
            return Grant::new_lesson(req, effect, policy, lists);
        }
        if !policy.grant_rules.ticket_pattern.is_match(&req.ticket) || is_lesson_ticket(&req.ticket)
        {
            return Err(GrantError::Ticket(
                req.ticket,
                policy.grant_rules.ticket_pattern.as_str().to_string(),
            ));
        }
        if !req.classrooms.is_empty() {
            return Err(GrantError::ClassroomsForLessons);
        }
        let reason = req.reason.trim();
        if PLACEHOLDER_REASONS.contains(&reason.to_lowercase().as_str()) || reason.len() < 4 {
            return Err(GrantError::Reason(req.reason));
        }
        if req.issued_by.trim().is_empty() {
            return Err(GrantError::IssuedBy);
        }
        if req.scope.groups.is_empty() && req.scope.users.is_empty() && req.scope.subnets.is_empty()
        {
            return Err(GrantError::EmptyScope);
        }
        if req.sites.is_empty() && req.categories.is_empty() {
            return Err(GrantError::EmptyTarget);
        }
        if let Some(c) = req.categories.intersection(policy.illegal()).iter().next() {
            let name = policy.category(c).name.clone();
            return Err(GrantError::Illegal(format!("category {name}"), name));
        }
        let sites = SiteList::parse(&req.sites)?;
        for entry in sites.entries() {
            let bits = policy.illegal_bits_of_site(lists, entry);
            if let Some(c) = bits.iter().next() {
                return Err(GrantError::Illegal(
                    entry.text.clone(),
                    policy.category(c).name.clone(),
                ));
            }
        }
        if req.expires <= req.starts {
            return Err(GrantError::Period);
        }
        if req.expires - req.starts > policy.grant_rules.max_duration {
            return Err(GrantError::TooLong(
                policy.grant_rules.max_duration.num_days(),
            ));
        }
        Ok(Grant {
            id: req.id.into(),
            kind: GrantKind::Ticketed,
            ticket: req.ticket.into(),
            classrooms: Vec::new(),
            issued_by: req.issued_by,
            reason: req.reason,
            scope: req.scope,
            sites,
            categories: req.categories,
            starts: req.starts,
            expires: req.expires,
        })
    }

    /// A lesson override: no ticket, classrooms and groups only, never a locked or
    /// illegal category, never longer than `[teachers] max_minutes`.
    fn new_lesson(
        mut req: GrantRequest,
        effect: Effect,
        policy: &Policy,
        lists: &CompiledLists,
    ) -> Result<Grant, GrantError> {
        if !req.ticket.is_empty() {
            return Err(GrantError::LessonTicket);
        }
        let reason = req.reason.trim();
        if PLACEHOLDER_REASONS.contains(&reason.to_lowercase().as_str()) || reason.len() < 4 {
            return Err(GrantError::Reason(req.reason));
        }
        if req.issued_by.trim().is_empty() {
            return Err(GrantError::IssuedBy);
        }
        if !req.scope.users.is_empty() || !req.scope.subnets.is_empty() {
            return Err(GrantError::LessonScope);
        }
        for name in &req.classrooms {
            match policy.teachers.classroom(name) {
                Some(room) => req.scope.subnets.extend(room.subnets.iter().copied()),
                None => {
                    return Err(GrantError::UnknownClassroom(
                        name.clone(),
                        policy
                            .teachers
                            .classrooms
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ))
                }
            }
        }
        if req.scope.groups.is_empty() && req.scope.subnets.is_empty() {
            return Err(GrantError::EmptyScope);
        }
        if req.sites.is_empty() && req.categories.is_empty() {
            return Err(GrantError::EmptyTarget);
        }
        // Most severe first, so an illegal category is named as such.
        let refuse = |what: String, set: CategorySet| -> Result<(), GrantError> {
            let Some(c) = policy.most_severe(set.intersection(policy.locked())) else {
                return Ok(());
            };
            let name = policy.category(c).name.clone();
            Err(if policy.illegal().contains(c) {
                GrantError::LessonIllegal(what, name)
            } else {
                GrantError::Locked(what, name)
            })
        };
        for c in req.categories.iter() {
            refuse(
                format!("category {}", policy.category(c).name),
                CategorySet::from_iter([c]),
            )?;
        }
        let sites = SiteList::parse(&req.sites)?;
        // Opening a site in a locked category would be the category's override by
        // another name. Closing one is harmless (and usually already so).
        if effect == Effect::Allow {
            for entry in sites.entries() {
                refuse(entry.text.clone(), policy.categories_of_site(lists, entry))?;
            }
        }
        if req.expires <= req.starts {
            return Err(GrantError::Period);
        }
        if req.expires - req.starts > policy.teachers.max_duration {
            return Err(GrantError::LessonTooLong(
                policy.teachers.max_duration.num_minutes(),
            ));
        }
        Ok(Grant {
            ticket: format!("{LESSON_TICKET_PREFIX}{}", req.id).into(),
            id: req.id.into(),
            kind: GrantKind::Lesson(effect),
            classrooms: req.classrooms,
            issued_by: req.issued_by,
            reason: req.reason,
            scope: req.scope,
            sites,
            categories: req.categories,
            starts: req.starts,
            expires: req.expires,
        })
    }

    /// Whether the grant is in force at `at` (`starts` ≤ `at` < `expires`).
    pub fn active_at(&self, at: DateTime<Utc>) -> bool {
        self.starts <= at && at < self.expires
    }

    /// Whether the grant's scope covers this requester.
    pub fn covers_requester(
        &self,
        group: GroupId,
        user: Option<&str>,
        client: Option<IpAddr>,
    ) -> bool {
        self.scope.groups.contains(&group)
            || user.is_some_and(|u| self.scope.users.iter().any(|g| g == u))
            || client.is_some_and(|ip| self.scope.subnets.iter().any(|n| n.contains(&ip)))
    }

    /// Whether the grant's sites cover the target.
    pub fn covers_site(&self, target: &Target) -> bool {
        self.sites.find(target).is_some()
    }
}

// ---------------------------------------------------------------------------------------
// The grants file

/// One `[[grant]]` (or `[[archived]]`) as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    /// Identifier, unique in the file.
    pub id: toml::Spanned<String>,
    /// `ticket` (default) or `lesson` (a teacher's lesson override).
    pub kind: Option<toml::Spanned<String>>,
    /// For a lesson override: `allow` or `block`.
    pub effect: Option<toml::Spanned<String>>,
    /// Helpdesk ticket; required for a ticketed grant, absent for a lesson override.
    pub ticket: Option<toml::Spanned<String>>,
    /// For a lesson override: the classrooms (`[teachers.classrooms]`) it is for.
    #[serde(default)]
    pub classrooms: Vec<String>,
    /// Technician who issued it.
    pub issued_by: toml::Spanned<String>,
    /// Why.
    pub reason: toml::Spanned<String>,
    /// When it was issued (RFC 3339).
    pub issued_at: Option<String>,
    /// Groups it applies to.
    #[serde(default)]
    pub groups: Vec<toml::Spanned<String>>,
    /// Users it applies to.
    #[serde(default)]
    pub users: Vec<String>,
    /// Client networks it applies to.
    #[serde(default)]
    pub subnets: Vec<toml::Spanned<String>>,
    /// Sites or host/path prefixes it opens.
    #[serde(default)]
    pub sites: Vec<toml::Spanned<String>>,
    /// Categories it opens.
    #[serde(default)]
    pub categories: Vec<toml::Spanned<String>>,
    /// Start (RFC 3339); default: when the file is loaded.
    pub starts: Option<toml::Spanned<String>>,
    /// Expiry (RFC 3339).
    pub expires: toml::Spanned<String>,
    /// For archived grants: when it was revoked.
    pub revoked_at: Option<String>,
    /// For archived grants: by whom.
    pub revoked_by: Option<String>,
    /// For archived grants: why.
    pub revoke_reason: Option<String>,
}

/// The grants file as written.
#[derive(Debug, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGrantsFile {
    /// Grants in force (or to come, or lapsed but not yet archived).
    #[serde(default)]
    pub grant: Vec<RawGrant>,
    /// Revoked and archived grants, kept for the record.
    #[serde(default)]
    pub archived: Vec<RawGrant>,
}

/// A grants file, validated.
#[derive(Debug, Clone, Default)]
pub struct GrantSet {
    /// Every `[[grant]]`, valid.
    pub grants: Vec<Grant>,
    /// Ids and revokers of archived grants, for the audit trail.
    pub archived: Vec<(String, Option<String>)>,
}

fn parse_time(
    text: &toml::Spanned<String>,
    source: &Source,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(text.get_ref()) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.push(source.error_at(
                text.span(),
                ConfigErrorKind::InvalidValue(format!(
                    "{field} {:?} is not a time in RFC 3339 form (e.g. \"2026-12-07T15:15:00Z\")",
                    text.get_ref()
                )),
            ));
            None
        }
    }
}

/// Compiles a grants file's text against a policy and its lists, collecting every error
/// with its line. `now` stands in for a missing `starts`.
pub fn compile_file(
    text: &str,
    source: &Source,
    policy: &Policy,
    lists: &CompiledLists,
    now: DateTime<Utc>,
) -> Result<GrantSet, ConfigErrors> {
    let raw: RawGrantsFile = source.parse(text)?;
    let mut errors = Vec::new();
    let mut set = GrantSet::default();
    let mut ids = std::collections::HashMap::new();
    for g in raw.grant {
        let line = source.line_of(g.id.span().start);
        if let Some(prev) = ids.insert(g.id.get_ref().clone(), line) {
            errors.push(source.error_at(
                g.id.span(),
                ConfigErrorKind::Duplicate(format!(
                    "grant id {:?} is already used on line {prev}",
                    g.id.get_ref()
                )),
            ));
            continue;
        }
        let mut scope = GrantScope::default();
        for name in &g.groups {
            match policy.group_id(name.get_ref()) {
                Some(id) => scope.groups.push(id),
                None => errors.push(
                    source.error_at(
                        name.span(),
                        ConfigErrorKind::UnknownGroup {
                            name: name.get_ref().clone(),
                            known: policy
                                .groups()
                                .map(|(_, g)| g.name.clone())
                                .collect::<Vec<_>>()
                                .join(", "),
                        },
                    ),
                ),
            }
        }
        for user in &g.users {
            if policy.identity.user(user).is_none() {
                errors.push(source.error_at(
                    g.id.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "grant {:?}: no user {user:?} in the users file",
                        g.id.get_ref()
                    )),
                ));
            }
        }
        scope.users = g.users.clone();
        for net in &g.subnets {
            match net
                .get_ref()
                .parse::<IpNet>()
                .or_else(|_| net.get_ref().parse::<IpAddr>().map(IpNet::from))
            {
                Ok(n) => scope.subnets.push(n.trunc()),
                Err(_) => errors.push(source.error_at(
                    net.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "subnet {:?} is not a network in CIDR form",
                        net.get_ref()
                    )),
                )),
            }
        }
        let mut categories = CategorySet::EMPTY;
        for c in &g.categories {
            match policy.category_id(c.get_ref()) {
                Some(id) => categories.insert(id),
                None => errors.push(
                    source.error_at(
                        c.span(),
                        ConfigErrorKind::UnknownCategory {
                            name: c.get_ref().clone(),
                            known: policy
                                .categories()
                                .map(|(_, d)| d.category.name.clone())
                                .collect::<Vec<_>>()
                                .join(", "),
                        },
                    ),
                ),
            }
        }
        let starts = match &g.starts {
            Some(t) => parse_time(t, source, "starts", &mut errors),
            None => Some(now),
        };
        let expires = parse_time(&g.expires, source, "expires", &mut errors);
        let (Some(starts), Some(expires)) = (starts, expires) else {
            continue;
        };
        let kind = match (
            g.kind.as_ref().map(|k| k.get_ref().as_str()),
            g.effect.as_ref(),
        ) {
            (None | Some("ticket"), None) => GrantKind::Ticketed,
            (Some("lesson"), Some(effect)) => match Effect::parse(effect.get_ref()) {
                Some(e) => GrantKind::Lesson(e),
                None => {
                    errors.push(source.error_at(
                        effect.span(),
                        ConfigErrorKind::InvalidValue(format!(
                            "grant {:?}: effect {:?} is not \"allow\" or \"block\"",
                            g.id.get_ref(),
                            effect.get_ref()
                        )),
                    ));
                    continue;
                }
            },
            (Some("lesson"), None) => {
                errors.push(source.error_at(
                    g.id.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "grant {:?}: a lesson override needs effect = \"allow\" or \"block\"",
                        g.id.get_ref()
                    )),
                ));
                continue;
            }
            (None | Some("ticket"), Some(effect)) => {
                errors.push(source.error_at(
                    effect.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "grant {:?}: effect is for lesson overrides (kind = \"lesson\"); a ticketed grant only allows",
                        g.id.get_ref()
                    )),
                ));
                continue;
            }
            (Some(other), _) => {
                let span = g.kind.as_ref().map_or(g.id.span(), |k| k.span());
                errors.push(source.error_at(
                    span,
                    ConfigErrorKind::InvalidValue(format!(
                        "grant {:?}: kind {other:?} is not \"ticket\" or \"lesson\"",
                        g.id.get_ref()
                    )),
                ));
                continue;
            }
        };
        let ticket = match (&g.ticket, kind) {
            (Some(t), _) => t.get_ref().clone(),
            (None, GrantKind::Lesson(_)) => String::new(),
            (None, GrantKind::Ticketed) => {
                errors.push(source.error_at(
                    g.id.span(),
                    ConfigErrorKind::InvalidValue(format!(
                        "grant {:?}: a grant needs a helpdesk ticket (ticket = \"HD-4411\")",
                        g.id.get_ref()
                    )),
                ));
                continue;
            }
        };
        let request = GrantRequest {
            id: g.id.get_ref().clone(),
            kind,
            ticket,
            classrooms: g.classrooms.clone(),
            issued_by: g.issued_by.get_ref().clone(),
            reason: g.reason.get_ref().clone(),
            scope,
            sites: g.sites.iter().map(|s| s.get_ref().clone()).collect(),
            categories,
            starts,
            expires,
        };
        match Grant::new(request, policy, lists) {
            Ok(grant) => set.grants.push(grant),
            Err(e) => {
                let span = match &e {
                    GrantError::Ticket(..) | GrantError::LessonTicket => {
                        g.ticket.as_ref().map_or(g.id.span(), |t| t.span())
                    }
                    GrantError::Reason(_) => g.reason.span(),
                    GrantError::IssuedBy => g.issued_by.span(),
                    GrantError::Period | GrantError::TooLong(_) | GrantError::LessonTooLong(_) => {
                        g.expires.span()
                    }
                    _ => g.id.span(),
                };
                let kind = match e {
                    GrantError::Illegal(..) | GrantError::LessonIllegal(..) => {
                        ConfigErrorKind::IllegalAllowed(format!("grant {:?}: {e}", g.id.get_ref()))
                    }
                    _ => ConfigErrorKind::InvalidValue(format!("grant {:?}: {e}", g.id.get_ref())),
                };
                errors.push(source.error_at(span, kind));
            }
        }
    }
    for a in raw.archived {
        set.archived
            .push((a.id.get_ref().clone(), a.revoked_by.clone()));
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(ConfigErrors(errors))
    }
}
