//! The policy: a validated, immutable picture of who may reach what.
//!
//! [`Policy::compile`] (in `compile.rs`, one step per part of the file) turns the raw
//! file ([`crate::core::config`]) into typed rules, collecting every problem with its
//! file and line. Once a value is a `Policy` it is valid: names resolve, no group can
//! reach an `illegal` category, schedules parse. Deciding a request is
//! [`crate::core::decide`]'s job; this module only holds and looks up the rules.
//!
//! Pure: no I/O, no clock.

mod compile;

use std::path::PathBuf;

use crate::core::category::{Category, CategoryId, CategorySet};
use crate::core::classify::CompiledLists;
use crate::core::config::{ConfigError, ConfigErrorKind, Source};
use crate::core::group::{Group, GroupId};
use crate::core::host::Target;
use crate::core::identity::Identity;
use crate::core::safe_search::{Engines, SafeSearchRewrite};
use crate::core::schedule::{Schedule, ScheduleId};
use crate::core::site::SiteEntry;

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

/// Teachers' lesson controls (`[teachers]`): the rooms, the lessons, the longest
/// override. Which rooms and groups a teacher may act for is their token's business
/// (the admin settings); here is what exists.
#[derive(Debug, Clone)]
pub struct TeacherRules {
    /// The schedule whose windows are lessons; an override ends with the lesson.
    pub lessons: Option<ScheduleId>,
    /// The longest an override may last. Default 60 minutes.
    pub max_duration: chrono::Duration,
    /// Classrooms, by name, with their client networks.
    pub classrooms: Vec<Classroom>,
    /// Directory groups whose members are teachers, each with what they may act for.
    pub directory: Vec<(
        crate::core::directory::GroupPattern,
        crate::core::grants::TeacherScope,
    )>,
}

/// A classroom: a name teachers use and the networks of its devices.
#[derive(Debug, Clone)]
pub struct Classroom {
    /// Its name (`room-12`).
    pub name: String,
    /// Its devices' networks.
    pub subnets: Vec<ipnet::IpNet>,
}

impl TeacherRules {
    /// A classroom by name.
    pub fn classroom(&self, name: &str) -> Option<&Classroom> {
        self.classrooms.iter().find(|c| c.name == name)
    }

    /// What a directory account in `groups` (group DNs) may act for as a teacher: every
    /// matching `[[teachers.directory]]` rule's classrooms and groups together (a
    /// teacher in two rooms' groups has both). `None` when no rule matches.
    pub fn scope_of_directory_groups<S: AsRef<str>>(
        &self,
        groups: &[S],
    ) -> Option<crate::core::grants::TeacherScope> {
        let mut scope: Option<crate::core::grants::TeacherScope> = None;
        for (pattern, rule) in &self.directory {
            if groups.iter().any(|g| pattern.matches(g.as_ref())) {
                let s = scope.get_or_insert_with(Default::default);
                for c in &rule.classrooms {
                    if !s.classrooms.contains(c) {
                        s.classrooms.push(c.clone());
                    }
                }
                for g in &rule.groups {
                    if !s.groups.contains(g) {
                        s.groups.push(g.clone());
                    }
                }
            }
        }
        scope
    }
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
    /// The rules for grants.
    pub grant_rules: GrantRules,
    /// The safe-search engine table (`[safe_search.engines]` over the shipped defaults).
    pub safe_search: Engines,
    /// Teachers' lesson controls.
    pub teachers: TeacherRules,
    /// Sites and categories never inspected (`[inspection] never_inspect_*`).
    pub inspection: crate::core::inspect::InspectionRules,
    /// `allow_sites` entries with their lines, for [`Policy::check_lists`].
    allow_site_lines: Vec<(GroupId, usize, usize)>,
    source: Source,
}

impl Policy {
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
        self.categories_of_site(lists, site)
            .intersection(self.illegal)
    }

    /// The categories (locked, illegal ones included) a teacher may not name.
    pub fn locked(&self) -> CategorySet {
        CategorySet::from_iter(
            self.categories()
                .filter(|(_, d)| d.category.locked)
                .map(|(id, _)| id),
        )
        .union(self.illegal)
    }

    /// The categories whose lists match a site entry (its host, and its path if given).
    pub fn categories_of_site(&self, lists: &CompiledLists, site: &SiteEntry) -> CategorySet {
        let target = Target {
            scheme: crate::core::host::Scheme::Http,
            host: site.host.clone(),
            port: 80,
            path: site.path.clone().unwrap_or_else(|| "/".to_string()),
            query: None,
        };
        lists.classify(&target).categories
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

    /// The name to dial instead of `host` for `group`'s safe-search settings, or `None`
    /// when the host is no engine's or the group has that engine's setting off.
    pub fn safe_search(
        &self,
        group: GroupId,
        host: &crate::core::host::Host,
    ) -> Option<SafeSearchRewrite> {
        self.safe_search
            .rewrite(host, self.groups[group.index()].safe_search)
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
