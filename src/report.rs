//! The weekly safeguarding report: what the Designated Safeguarding Lead reads on Monday
//! morning, built from one or more nodes' decision logs.
//!
//! One pass over the entries of the period (and the week before, for the trend) feeds
//! aggregates whose size depends on the number of distinct users, hosts and categories,
//! never on the number of records. Nothing about an `illegal` category is kept beyond
//! its host: such URLs are never printed in full, in any format.

use std::collections::BTreeMap;

// Aggregation keys are short strings hashed millions of times: FxHash, not SipHash
// (no attacker chooses them in a report run over a log), and hashbrown's `entry_ref`,
// which looks a key up once and allocates it only when it is new.
type HashMap<K, V> = hashbrown::HashMap<K, V, rustc_hash::FxBuildHasher>;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use crate::core::category::Severity;
use crate::core::grants::GrantSet;
use crate::core::policy::Policy;
use crate::decision_log::{Body, Entry, StoredAction};

/// Rows kept per user for the drill-down.
const DRILLDOWN_PER_USER: usize = 200;

/// The period a report covers.
#[derive(Debug, Clone, Copy)]
pub struct Period {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
}

/// The ISO week `YYYY-Www` in `tz`, Monday 00:00 to the next Monday 00:00 local time.
pub fn iso_week(text: &str, tz: chrono_tz::Tz) -> Result<Period, String> {
    let bad = || format!("{text:?} is not an ISO week like 2026-W47");
    let (year, week) = text.split_once("-W").ok_or_else(bad)?;
    let year: i32 = year.parse().map_err(|_| bad())?;
    let week: u32 = week.parse().map_err(|_| bad())?;
    let monday = NaiveDate::from_isoywd_opt(year, week, chrono::Weekday::Mon).ok_or_else(bad)?;
    let start = local_midnight(monday, tz).ok_or_else(bad)?;
    let end = local_midnight(monday + chrono::Duration::days(7), tz).ok_or_else(bad)?;
    Ok(Period {
        from: start,
        to: end,
    })
}

fn local_midnight(day: NaiveDate, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    tz.from_local_datetime(&day.and_hms_opt(0, 0, 0)?)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Host of a logged URL (`http://host:port/path` or `host:port`).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority)
}

/// Adds one to `key`'s count, allocating the key only the first time.
fn bump(map: &mut HashMap<String, u64>, key: &str) {
    *map.entry_ref(key).or_insert(0) += 1;
}

/// One row of the alerts table: attempts by one person at one category.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Category.
    pub category: String,
    /// `illegal` or `safeguarding`.
    pub severity: String,
    /// User, or device address where no user signed in.
    pub who: String,
    /// Group.
    pub group: String,
    /// The hosts tried, most tried first (at most ten; for illegal categories: hosts
    /// only — report, do not visit).
    pub hosts: Vec<Count>,
    /// Attempts at further hosts beyond those kept.
    pub other_hosts: u64,
    /// An example URL; `None` for illegal categories.
    pub example_url: Option<String>,
    /// Whether it was blocked every time.
    pub blocked: bool,
    /// Attempts.
    pub count: u64,
    /// First attempt.
    pub first: String,
    /// Last attempt.
    pub last: String,
}

impl Alert {
    /// The hosts as one line: `a.example (12), b.example (3) and 4 more attempts elsewhere`.
    pub fn hosts_text(&self) -> String {
        let mut text = self
            .hosts
            .iter()
            .map(|h| format!("{} ({})", h.name, h.count))
            .collect::<Vec<_>>()
            .join(", ");
        if self.other_hosts > 0 {
            text.push_str(&format!(
                " and {} more attempts elsewhere",
                self.other_hosts
            ));
        }
        text
    }
}

/// Host names, each stored once and counted elsewhere by number: the per-group and
/// per-alert tables then hold small integers, not another copy of every name (and a
/// lookup compares integers, not strings out in the heap).
#[derive(Default)]
struct Hosts {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Hosts {
    fn id(&mut self, host: &str) -> u32 {
        if let Some(id) = self.ids.get(host) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(host.to_string());
        self.ids.insert(host.to_string(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }
}

/// The `n` most counted, most first (ties by name), and the sum of the counts left out.
fn top<K>(m: HashMap<K, u64>, n: usize, name: impl Fn(K) -> String) -> (Vec<Count>, u64) {
    let mut v: Vec<Count> = m
        .into_iter()
        .map(|(key, count)| Count {
            name: name(key),
            count,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    let left_out = v.iter().skip(n).map(|c| c.count).sum();
    v.truncate(n);
    (v, left_out)
}

/// A search of concern.
#[derive(Debug, Clone, Serialize)]
pub struct SearchRow {
    /// When first searched in the period.
    pub time: String,
    /// When last searched.
    pub last: String,
    /// How many times this person made this search.
    pub count: u64,
    /// Who.
    pub who: String,
    /// Group.
    pub group: String,
    /// The listed terms found.
    pub terms: Vec<String>,
    /// Categories of the terms.
    pub categories: Vec<String>,
    /// What was typed, when it could be read from the URL.
    pub search: Option<String>,
}

/// Counted rows: a name and a count.
#[derive(Debug, Clone, Serialize)]
pub struct Count {
    /// Name.
    pub name: String,
    /// Count.
    pub count: u64,
}

/// One group's week.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    /// Group.
    pub group: String,
    /// Requests decided.
    pub requests: u64,
    /// Of them blocked.
    pub blocked: u64,
    /// Blocked share, 0–1.
    pub blocked_share: f64,
    /// Most blocked categories.
    pub top_categories: Vec<Count>,
    /// Most blocked hosts.
    pub top_sites: Vec<Count>,
}

/// A bypass attempt row.
#[derive(Debug, Clone, Serialize)]
pub struct BypassRow {
    /// `circumvention`, `ip_literal`, `no_sni`, `not_tls`, `bad_sni`, `ech` (a server
    /// name hidden by Encrypted ClientHello), `auth_failed` (failed proxy sign-ins from
    /// one device: a burst is someone guessing).
    pub kind: String,
    /// Who.
    pub who: String,
    /// Group.
    pub group: String,
    /// Host.
    pub host: String,
    /// Attempts.
    pub count: u64,
}

/// A pupil (or device) with blocked attempts in sensitive categories.
#[derive(Debug, Clone, Serialize)]
pub struct PersonRow {
    /// Who.
    pub who: String,
    /// Group.
    pub group: String,
    /// Blocked attempts in illegal or safeguarding categories.
    pub attempts: u64,
    /// By category.
    pub by_category: BTreeMap<String, u64>,
}

/// A grant in the period.
#[derive(Debug, Clone, Serialize)]
pub struct GrantRow {
    /// Ticket.
    pub ticket: String,
    /// Grant id.
    pub id: String,
    /// What happened (`added`, `revoked`, `expired`, `active`, …).
    pub event: String,
    /// Technician.
    pub by: String,
    /// Reason or detail.
    pub detail: String,
    /// Who it covers: groups, users, networks.
    pub scope: String,
    /// What it opens: sites and URL prefixes, categories.
    pub target: String,
    /// Requests the grant allowed in the period.
    pub requests_allowed: u64,
}

/// A grant's terms as the grants file records them (its live and archived sections),
/// for the report's grant table: `gatehouse report` reads them with the grants file.
#[derive(Debug, Clone, Default)]
pub struct GrantTerms {
    /// Who it covers.
    pub scope: String,
    /// What it opens.
    pub target: String,
    /// Why it was issued.
    pub reason: String,
}

/// One day.
#[derive(Debug, Clone, Serialize)]
pub struct DayRow {
    /// Local date.
    pub date: String,
    /// Allowed requests.
    pub allowed: u64,
    /// Blocked requests.
    pub blocked: u64,
    /// Alert attempts.
    pub alerts: u64,
}

/// Totals for the trend.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Requests decided.
    pub requests: u64,
    /// Blocked.
    pub blocked: u64,
    /// Alert attempts (illegal or safeguarding).
    pub alerts: u64,
}

/// Log integrity, per directory.
#[derive(Debug, Clone, Serialize)]
pub struct Integrity {
    /// Directory.
    pub dir: String,
    /// Whether `verify` found no fault.
    pub ok: bool,
    /// Summary or the first fault.
    pub detail: String,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// School or trust.
    pub school: String,
    /// Start, local time.
    pub from: String,
    /// End, local time.
    pub to: String,
    /// When generated.
    pub generated: String,
    /// Nodes whose logs were read.
    pub nodes: Vec<String>,
    /// Log integrity.
    pub integrity: Vec<Integrity>,
    /// This period's totals.
    pub totals: Totals,
    /// The previous period's totals.
    pub previous: Totals,
    /// Safeguarding alerts, most severe and most frequent first.
    pub alerts: Vec<Alert>,
    /// Searches of concern.
    pub searches: Vec<SearchRow>,
    /// Bypass attempts.
    pub bypass: Vec<BypassRow>,
    /// Per group.
    pub groups: Vec<GroupRow>,
    /// People with the most blocked attempts in sensitive categories.
    pub people: Vec<PersonRow>,
    /// Per-person drill-down: time, category, host.
    pub drilldown: BTreeMap<String, Vec<(String, String, String)>>,
    /// Grants.
    pub grants: Vec<GrantRow>,
    /// Per day.
    pub daily: Vec<DayRow>,
}

/// Distinct hosts kept per alert row; further ones are only counted.
const HOSTS_PER_ALERT: usize = 20;

struct AlertAcc {
    group: String,
    severity: &'static str,
    example_url: Option<String>,
    blocked: bool,
    count: u64,
    first_us: i64,
    last_us: i64,
    hosts: HashMap<u32, u64>,
    other_hosts: u64,
}

/// One person's attempts at sensitive categories.
#[derive(Default)]
struct PersonAcc {
    group: String,
    /// Category → attempts.
    alerts: HashMap<String, AlertAcc>,
    /// Blocked attempts by category.
    blocked: BTreeMap<String, u64>,
    /// The first attempts: time (µs), category, host.
    drilldown: Vec<(i64, String, String)>,
}

#[derive(Default)]
struct GroupAcc {
    requests: u64,
    blocked: u64,
    categories: HashMap<String, u64>,
    sites: HashMap<u32, u64>,
}

/// Accumulates entries into a report.
pub struct Builder<'a> {
    policy: &'a Policy,
    period: Period,
    previous_from: DateTime<Utc>,
    severity: HashMap<String, Severity>,
    nodes: Vec<String>,
    totals: Totals,
    previous: Totals,
    /// Everything kept per person (user, or device address where no user).
    people: HashMap<String, PersonAcc>,
    hosts: Hosts,
    /// (who, what was searched) → the search, first and last time (µs): a search
    /// repeated all week is one row with its count.
    searches: HashMap<(String, String), (SearchRow, i64, i64)>,
    bypass: HashMap<(String, String, String, String), u64>,
    groups: HashMap<String, GroupAcc>,
    grant_events: Vec<GrantRow>,
    grant_use: HashMap<String, u64>,
    daily: BTreeMap<NaiveDate, DayRow>,
    /// Each local day's start in µs, for finding an entry's day without a time-zone
    /// conversion per entry.
    day_starts: Vec<(i64, NaiveDate)>,
}

fn time_text(us: i64, tz: chrono_tz::Tz) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap_or_default()
        .with_timezone(&tz)
        .format("%a %-d %b %H:%M")
        .to_string()
}

impl<'a> Builder<'a> {
    /// A builder for `period`; the week before it is read for the trend.
    pub fn new(policy: &'a Policy, period: Period) -> Builder<'a> {
        let previous_from = period.from - (period.to - period.from);
        let mut daily = BTreeMap::new();
        let mut day = period.from.with_timezone(&policy.timezone).date_naive();
        let last = (period.to - chrono::Duration::seconds(1))
            .with_timezone(&policy.timezone)
            .date_naive();
        while day <= last {
            daily.insert(
                day,
                DayRow {
                    date: day.format("%a %-d %b").to_string(),
                    allowed: 0,
                    blocked: 0,
                    alerts: 0,
                },
            );
            day = day.succ_opt().unwrap_or(last + chrono::Duration::days(1));
        }
        Builder {
            policy,
            period,
            previous_from,
            severity: policy
                .categories()
                .map(|(_, d)| (d.category.name.clone(), d.category.severity))
                .collect(),
            nodes: Vec::new(),
            totals: Totals::default(),
            previous: Totals::default(),
            searches: HashMap::default(),
            bypass: HashMap::default(),
            groups: HashMap::default(),
            people: HashMap::default(),
            hosts: Hosts::default(),
            grant_events: Vec::new(),
            grant_use: HashMap::default(),
            day_starts: daily
                .keys()
                .filter_map(|d| {
                    local_midnight(*d, policy.timezone).map(|t| (t.timestamp_micros(), *d))
                })
                .collect(),
            daily,
        }
    }

    /// The earliest time the builder wants entries from.
    pub fn reads_from(&self) -> DateTime<Utc> {
        self.previous_from
    }

    /// Takes one entry of node `node`.
    pub fn entry(&mut self, node: &str, entry: &Entry) {
        let us = entry.time_us;
        let from = self.period.from.timestamp_micros();
        let to = self.period.to.timestamp_micros();
        if us < self.previous_from.timestamp_micros() || us >= to {
            return;
        }
        if !self.nodes.iter().any(|n| n == node) {
            self.nodes.push(node.to_string());
        }
        let sensitive = |s: &HashMap<String, Severity>, c: &str| {
            matches!(
                s.get(c),
                Some(Severity::Illegal) | Some(Severity::Safeguarding)
            )
        };
        if us < from {
            if let Body::Decision(d) = &entry.body {
                self.previous.requests += 1;
                if d.action == StoredAction::Block {
                    self.previous.blocked += 1;
                }
                if d.categories.iter().any(|c| sensitive(&self.severity, c)) {
                    self.previous.alerts += 1;
                }
            }
            return;
        }
        match &entry.body {
            Body::Decision(d) => {
                let blocked = d.action == StoredAction::Block;
                let who: std::borrow::Cow<'_, str> = match &d.user {
                    Some(u) => u.as_str().into(),
                    None => d.client.to_string().into(),
                };
                let host: &str = d.sni.as_deref().unwrap_or_else(|| host_of(&d.url));
                let illegal = d
                    .categories
                    .iter()
                    .any(|c| self.severity.get(c) == Some(&Severity::Illegal));
                self.totals.requests += 1;
                let day = match self.day_starts.partition_point(|(start, _)| *start <= us) {
                    0 => None,
                    i => Some(self.day_starts[i - 1].1),
                };
                let g = self.groups.entry_ref(d.group.as_str()).or_default();
                g.requests += 1;
                if blocked {
                    self.totals.blocked += 1;
                    g.blocked += 1;
                    if let Some(c) = d.categories.first() {
                        bump(&mut g.categories, c);
                    }
                    *g.sites.entry(self.hosts.id(host)).or_insert(0) += 1;
                }
                if let Some(row) = day.and_then(|d| self.daily.get_mut(&d)) {
                    if blocked {
                        row.blocked += 1;
                    } else {
                        row.allowed += 1;
                    }
                }
                if let Some(ticket) = &d.grant {
                    bump(&mut self.grant_use, ticket);
                }
                // Alerts: every attempt at an illegal or safeguarding category, collapsed
                // per person and category.
                let mut alerted = false;
                for c in d.categories.iter().filter(|c| sensitive(&self.severity, c)) {
                    alerted = true;
                    let severity = self
                        .severity
                        .get(c)
                        .map(|s| s.as_str())
                        .unwrap_or("safeguarding");
                    let person = self
                        .people
                        .entry_ref(who.as_ref())
                        .or_insert_with(|| PersonAcc {
                            group: d.group.clone(),
                            ..PersonAcc::default()
                        });
                    let a = person
                        .alerts
                        .entry_ref(c.as_str())
                        .or_insert_with(|| AlertAcc {
                            group: d.group.clone(),
                            severity,
                            example_url: None,
                            blocked: true,
                            count: 0,
                            first_us: us,
                            last_us: us,
                            hosts: HashMap::default(),
                            other_hosts: 0,
                        });
                    a.count += 1;
                    a.last_us = us;
                    a.blocked &= blocked;
                    if a.example_url.is_none() && !illegal {
                        a.example_url = Some(d.url.clone());
                    }
                    let host_id = self.hosts.id(host);
                    if a.hosts.len() < HOSTS_PER_ALERT {
                        *a.hosts.entry(host_id).or_insert(0) += 1;
                    } else if let Some(n) = a.hosts.get_mut(&host_id) {
                        *n += 1;
                    } else {
                        a.other_hosts += 1;
                    }
                    if blocked {
                        match person.blocked.get_mut(c.as_str()) {
                            Some(n) => *n += 1,
                            None => {
                                person.blocked.insert(c.clone(), 1);
                            }
                        }
                    }
                    if person.drilldown.len() < DRILLDOWN_PER_USER {
                        person.drilldown.push((us, c.clone(), host.to_string()));
                    }
                }
                if alerted {
                    self.totals.alerts += 1;
                    if let Some(row) = day.and_then(|d| self.daily.get_mut(&d)) {
                        row.alerts += 1;
                    }
                }
                if !d.terms.is_empty() {
                    let search = if illegal {
                        None
                    } else {
                        crate::core::host::Target::parse(&d.url).ok().and_then(|t| {
                            crate::core::classify::search_query(
                                &t.host,
                                &t.path,
                                t.query.as_deref(),
                            )
                        })
                    };
                    let said = search.clone().unwrap_or_else(|| d.terms.join(", "));
                    let row = self
                        .searches
                        .entry((who.to_string(), said))
                        .or_insert_with(|| {
                            (
                                SearchRow {
                                    time: String::new(),
                                    last: String::new(),
                                    count: 0,
                                    who: who.to_string(),
                                    group: d.group.clone(),
                                    terms: d.terms.clone(),
                                    categories: d.categories.clone(),
                                    search,
                                },
                                us,
                                us,
                            )
                        });
                    row.0.count += 1;
                    row.2 = us;
                }
                if blocked {
                    let kind = if d.categories.iter().any(|c| c == "circumvention") {
                        Some("circumvention")
                    } else {
                        match d.reason.as_str() {
                            "ip_literal" => Some("ip_literal"),
                            "no_sni" => Some("no_sni"),
                            "not_tls" => Some("not_tls"),
                            "bad_sni" => Some("bad_sni"),
                            "ech" => Some("ech"),
                            "auth_failed" => Some("auth_failed"),
                            _ => None,
                        }
                    };
                    if let Some(kind) = kind {
                        *self
                            .bypass
                            .entry((
                                kind.to_string(),
                                who.to_string(),
                                d.group.clone(),
                                host.to_string(),
                            ))
                            .or_default() += 1;
                    }
                }
            }
            Body::Grant {
                action,
                id,
                ticket,
                by,
                detail,
            } if !action.starts_with("api list") => {
                self.grant_events.push(GrantRow {
                    ticket: ticket.clone(),
                    id: id.clone(),
                    event: action.clone(),
                    by: by.clone(),
                    detail: detail.clone(),
                    scope: String::new(),
                    target: String::new(),
                    requests_allowed: 0,
                });
            }
            _ => {}
        }
    }

    /// Finishes the report. `grants` is the grants file in force, for grants that were
    /// active in the period but issued before it.
    pub fn finish(
        self,
        grants: &GrantSet,
        terms: &BTreeMap<String, GrantTerms>,
        integrity: Vec<Integrity>,
        now: DateTime<Utc>,
    ) -> Report {
        let tz = self.policy.timezone;
        let host_name = |id: u32| self.hosts.name(id).to_string();
        let mut alerts: Vec<Alert> = Vec::new();
        let mut people: Vec<PersonRow> = Vec::new();
        let mut drilldown = BTreeMap::new();
        for (who, person) in self.people {
            for (category, a) in person.alerts {
                // Hosts past the ten shown join the attempts counted elsewhere.
                let (hosts, not_shown) = top(a.hosts, 10, host_name);
                alerts.push(Alert {
                    category,
                    severity: a.severity.to_string(),
                    who: who.clone(),
                    group: a.group,
                    hosts,
                    other_hosts: a.other_hosts + not_shown,
                    example_url: a.example_url,
                    blocked: a.blocked,
                    count: a.count,
                    first: time_text(a.first_us, tz),
                    last: time_text(a.last_us, tz),
                });
            }
            if !person.blocked.is_empty() {
                people.push(PersonRow {
                    attempts: person.blocked.values().sum(),
                    who: who.clone(),
                    group: person.group,
                    by_category: person.blocked,
                });
            }
            let rows: Vec<(String, String, String)> = person
                .drilldown
                .into_iter()
                .map(|(t, c, h)| (time_text(t, tz), c, h))
                .collect();
            drilldown.insert(who, rows);
        }
        let mut searches: Vec<(SearchRow, i64)> = self
            .searches
            .into_values()
            .map(|(mut row, first, last)| {
                row.time = time_text(first, tz);
                row.last = time_text(last, tz);
                (row, first)
            })
            .collect();
        searches.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.who.cmp(&b.0.who)));
        let searches = searches.into_iter().map(|(row, _)| row).collect();
        let rank = |s: &str| if s == "illegal" { 0 } else { 1 };
        alerts.sort_by(|a, b| {
            rank(&a.severity)
                .cmp(&rank(&b.severity))
                .then(b.count.cmp(&a.count))
                .then(a.who.cmp(&b.who))
                .then(a.category.cmp(&b.category))
        });
        let mut bypass: Vec<BypassRow> = self
            .bypass
            .into_iter()
            .map(|((kind, who, group, host), count)| BypassRow {
                kind,
                who,
                group,
                host,
                count,
            })
            .collect();
        bypass.sort_by(|a, b| b.count.cmp(&a.count).then(a.who.cmp(&b.who)));
        let mut group_list: Vec<(String, GroupAcc)> = self.groups.into_iter().collect();
        group_list.sort_by(|a, b| a.0.cmp(&b.0));
        let groups = group_list
            .into_iter()
            .map(|(group, g)| GroupRow {
                blocked_share: if g.requests == 0 {
                    0.0
                } else {
                    g.blocked as f64 / g.requests as f64
                },
                group,
                requests: g.requests,
                blocked: g.blocked,
                top_categories: top(g.categories, 5, |c| c).0,
                top_sites: top(g.sites, 10, host_name).0,
            })
            .collect();
        people.sort_by(|a, b| b.attempts.cmp(&a.attempts).then(a.who.cmp(&b.who)));
        people.truncate(20);
        let mut grant_rows = self.grant_events;
        for g in &grants.grants {
            let overlaps = g.starts < self.period.to && g.expires > self.period.from;
            if overlaps && !grant_rows.iter().any(|r| r.id == *g.id) {
                grant_rows.push(GrantRow {
                    ticket: g.ticket.to_string(),
                    id: g.id.to_string(),
                    event: "active".into(),
                    by: g.issued_by.clone(),
                    detail: g.reason.clone(),
                    scope: String::new(),
                    target: String::new(),
                    requests_allowed: 0,
                });
            }
        }
        for row in &mut grant_rows {
            row.requests_allowed = self.grant_use.get(&row.ticket).copied().unwrap_or(0);
            if let Some(t) = terms.get(&row.id) {
                row.scope = t.scope.clone();
                row.target = t.target.clone();
                if row.detail.is_empty() {
                    row.detail = t.reason.clone();
                }
            }
        }
        Report {
            school: self.policy.school.clone(),
            from: self
                .period
                .from
                .with_timezone(&tz)
                .format("%a %-d %b %Y %H:%M")
                .to_string(),
            to: self
                .period
                .to
                .with_timezone(&tz)
                .format("%a %-d %b %Y %H:%M")
                .to_string(),
            generated: now
                .with_timezone(&tz)
                .format("%a %-d %b %Y %H:%M")
                .to_string(),
            nodes: self.nodes,
            integrity,
            totals: self.totals,
            previous: self.previous,
            alerts,
            searches,
            bypass,
            groups,
            people,
            drilldown,
            grants: grant_rows,
            daily: self.daily.into_values().collect(),
        }
    }
}

fn esc(s: &str) -> String {
    crate::proxy::pages::escape(s)
}

fn trend(now: u64, before: u64) -> String {
    if before == 0 {
        return if now == 0 {
            "none the week before either".into()
        } else {
            "none the week before".into()
        };
    }
    let change = (now as f64 - before as f64) / before as f64 * 100.0;
    format!("{change:+.0}% on the week before ({before})")
}

/// A bar chart as inline SVG, with a title and description for screen readers.
fn bar_chart(title: &str, labels: &[String], series: &[(&str, &str, Vec<u64>)]) -> String {
    let width = 640.0;
    let height = 200.0;
    let max = series
        .iter()
        .flat_map(|(_, _, v)| v.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = labels.len().max(1) as f64;
    let slot = (width - 40.0) / n;
    let bar = (slot - 8.0) / series.len().max(1) as f64;
    let mut svg = format!(
        "<svg role=\"img\" aria-labelledby=\"t-{id} d-{id}\" viewBox=\"0 0 {width} {h}\" width=\"100%\">\
<title id=\"t-{id}\">{title}</title><desc id=\"d-{id}\">{desc}</desc>",
        id = title.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase(),
        h = height + 40.0,
        title = esc(title),
        desc = esc(&series
            .iter()
            .map(|(name, _, v)| format!("{name}: {}", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")))
            .collect::<Vec<_>>()
            .join("; ")),
    );
    // Label at most about ten bars, so a month's days do not overprint.
    let every = labels.len().div_ceil(10).max(1);
    for (i, label) in labels.iter().enumerate() {
        let x0 = 30.0 + i as f64 * slot;
        for (j, (_, colour, values)) in series.iter().enumerate() {
            let v = values.get(i).copied().unwrap_or(0) as f64;
            let h = v / max * height;
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>",
                x0 + j as f64 * bar,
                10.0 + height - h,
                bar.max(1.0),
                h
            );
        }
        if i % every == 0 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
                x0 + slot / 2.0 - 4.0,
                height + 28.0,
                esc(label)
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"2\" y=\"18\" font-size=\"11\">{}</text>",
        max as u64
    );
    svg.push_str("</svg>");
    let legend: Vec<String> = series
        .iter()
        .map(|(name, colour, _)| {
            format!(
                "<span class=\"key\" style=\"background:{colour}\"></span>{}",
                esc(name)
            )
        })
        .collect();
    format!(
        "<figure>{svg}<figcaption>{}</figcaption></figure>",
        legend.join(" ")
    )
}

fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return "<p class=\"none\">None this week.</p>".into();
    }
    let mut out = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(&c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

const CSS: &str = "@page{size:A4;margin:15mm}body{font-family:system-ui,'Segoe UI',Roboto,Arial,sans-serif;color:#1d2733;max-width:60rem;margin:1rem auto;padding:0 1rem;line-height:1.4}\
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;border-bottom:2px solid #23507a;padding-bottom:.2rem;margin-top:2rem;break-after:avoid}\
table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.5rem 0}th,td{border:1px solid #c9d1da;padding:.25rem .4rem;text-align:left;vertical-align:top}\
th{background:#eef3f8}tr{break-inside:avoid}.warn{background:#fff1f0;border-left:4px solid #c0392b;padding:.5rem .75rem}\
.ok{background:#eefaf0;border-left:4px solid #2e8540;padding:.5rem .75rem}.none{color:#6b7785;font-style:italic}\
.key{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}figure{margin:.5rem 0}figcaption{font-size:.8rem}\
.summary{display:flex;gap:1rem;flex-wrap:wrap}.summary div{background:#f3f5f8;padding:.5rem .8rem;border-radius:6px}";

impl Report {
    /// Self-contained HTML: inline CSS and SVG, no scripts, no fetches, printable on A4.
    pub fn html(&self) -> String {
        let mut o = String::new();
        let _ = write!(
            o,
            "<!DOCTYPE html><html lang=\"en-GB\"><head><meta charset=\"utf-8\"><title>Weekly safeguarding report — {school}</title>\
<style>{CSS}</style></head><body><header><h1>Weekly safeguarding report</h1><p><strong>{school}</strong><br>{from} to {to}<br>\
Generated {generated} from {nodes}</p></header>",
            school = esc(&self.school),
            from = esc(&self.from),
            to = esc(&self.to),
            generated = esc(&self.generated),
            nodes = esc(&if self.nodes.is_empty() { "no logs".to_string() } else { format!("node(s) {}", self.nodes.join(", ")) }),
        );
        let all_ok = self.integrity.iter().all(|i| i.ok);
        let _ = write!(
            o,
            "<section aria-labelledby=\"integrity\"><h2 id=\"integrity\">Log integrity</h2><p class=\"{}\">{}</p>{}</section>",
            if all_ok { "ok" } else { "warn" },
            if all_ok { "Every log read verified: checksums, sequence and hash chain intact." } else { "A log did not verify: the figures below may be incomplete or altered. Keep the log files and tell your IT lead." },
            table(&["Log", "Verified", "Detail"], self.integrity.iter().map(|i| vec![i.dir.clone(), if i.ok { "yes".into() } else { "NO".into() }, i.detail.clone()]).collect()),
        );
        let _ = write!(
            o,
            "<section aria-labelledby=\"summary\"><h2 id=\"summary\">Summary</h2><div class=\"summary\">\
<div><strong>{}</strong> requests<br><small>{}</small></div><div><strong>{}</strong> blocked<br><small>{}</small></div>\
<div><strong>{}</strong> safeguarding alerts<br><small>{}</small></div></div></section>",
            self.totals.requests,
            esc(&trend(self.totals.requests, self.previous.requests)),
            self.totals.blocked,
            esc(&trend(self.totals.blocked, self.previous.blocked)),
            self.totals.alerts,
            esc(&trend(self.totals.alerts, self.previous.alerts)),
        );
        o.push_str(
            "<section aria-labelledby=\"alerts\"><h2 id=\"alerts\">Safeguarding alerts</h2>",
        );
        if self.alerts.iter().any(|a| a.severity == "illegal") {
            o.push_str("<p class=\"warn\"><strong>Illegal content:</strong> only the host is shown. Do not visit it. Report it following your safeguarding procedures (the IWF for child sexual abuse imagery, the police or ACT for terrorist content).</p>");
        }
        o.push_str(&table(
            &[
                "Category", "Severity", "Who", "Group", "Hosts", "Attempts", "First", "Last",
                "Outcome",
            ],
            self.alerts
                .iter()
                .map(|a| {
                    vec![
                        a.category.clone(),
                        a.severity.clone(),
                        a.who.clone(),
                        a.group.clone(),
                        a.hosts_text(),
                        a.count.to_string(),
                        a.first.clone(),
                        a.last.clone(),
                        if a.blocked {
                            "blocked".into()
                        } else {
                            "ALLOWED (grant)".into()
                        },
                    ]
                })
                .collect(),
        ));
        let labels: Vec<String> = self.daily.iter().map(|d| d.date.clone()).collect();
        o.push_str(&bar_chart(
            "Alerts per day",
            &labels,
            &[(
                "alert attempts",
                "#c0392b",
                self.daily.iter().map(|d| d.alerts).collect(),
            )],
        ));
        o.push_str("</section>");
        let _ = write!(
            o,
            "<section aria-labelledby=\"searches\"><h2 id=\"searches\">Search terms of concern</h2>{}</section>",
            table(
                &["First", "Who", "Group", "Terms", "Search", "Times"],
                self.searches.iter().map(|s| vec![s.time.clone(), s.who.clone(), s.group.clone(), s.terms.join(", "), s.search.clone().unwrap_or_default(), s.count.to_string()]).collect()
            )
        );
        let _ = write!(
            o,
            "<section aria-labelledby=\"bypass\"><h2 id=\"bypass\">Attempts to get round the filter</h2>{}</section>",
            table(
                &["Kind", "Who", "Group", "Host", "Attempts"],
                self.bypass.iter().map(|b| vec![b.kind.clone(), b.who.clone(), b.group.clone(), b.host.clone(), b.count.to_string()]).collect()
            )
        );
        let _ = write!(
            o,
            "<section aria-labelledby=\"people\"><h2 id=\"people\">Most blocked attempts in sensitive categories</h2>{}</section>",
            table(
                &["Who", "Group", "Attempts", "Categories"],
                self.people
                    .iter()
                    .map(|p| vec![p.who.clone(), p.group.clone(), p.attempts.to_string(), p.by_category.iter().map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", ")])
                    .collect()
            )
        );
        o.push_str("<section aria-labelledby=\"groups\"><h2 id=\"groups\">By group</h2>");
        o.push_str(&table(
            &[
                "Group",
                "Requests",
                "Blocked",
                "Blocked share",
                "Top blocked categories",
                "Top blocked sites",
            ],
            self.groups
                .iter()
                .map(|g| {
                    vec![
                        g.group.clone(),
                        g.requests.to_string(),
                        g.blocked.to_string(),
                        format!("{:.1}%", g.blocked_share * 100.0),
                        g.top_categories
                            .iter()
                            .map(|c| format!("{} {}", c.name, c.count))
                            .collect::<Vec<_>>()
                            .join(", "),
                        g.top_sites
                            .iter()
                            .take(5)
                            .map(|c| format!("{} {}", c.name, c.count))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ]
                })
                .collect(),
        ));
        let group_labels: Vec<String> = self.groups.iter().map(|g| g.group.clone()).collect();
        o.push_str(&bar_chart(
            "Blocked requests by group",
            &group_labels,
            &[(
                "blocked",
                "#e67e22",
                self.groups.iter().map(|g| g.blocked).collect(),
            )],
        ));
        o.push_str(&bar_chart(
            "Allowed and blocked requests per day",
            &labels,
            &[
                (
                    "allowed",
                    "#2e8540",
                    self.daily.iter().map(|d| d.allowed).collect(),
                ),
                (
                    "blocked",
                    "#e67e22",
                    self.daily.iter().map(|d| d.blocked).collect(),
                ),
            ],
        ));
        o.push_str("</section>");
        let _ = write!(
            o,
            "<section aria-labelledby=\"grants\"><h2 id=\"grants\">Grants (unblocks against a ticket)</h2>{}</section>",
            table(
                &["Ticket", "Grant", "Event", "By", "For", "Opens", "Reason / detail", "Requests allowed"],
                self.grants.iter().map(|g| vec![g.ticket.clone(), g.id.clone(), g.event.clone(), g.by.clone(), g.scope.clone(), g.target.clone(), g.detail.clone(), g.requests_allowed.to_string()]).collect()
            )
        );
        o.push_str("</body></html>\n");
        o
    }

    /// CSV of the alert and grant tables (first column says which).
    pub fn csv(&self) -> String {
        let f = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut o = String::from("table,category_or_ticket,severity_or_grant,who_or_event,group_or_by,host_or_detail,count,first,last,scope,target\n");
        for a in &self.alerts {
            let _ = writeln!(
                o,
                "alert,{},{},{},{},{},{},{},{},,",
                f(&a.category),
                f(&a.severity),
                f(&a.who),
                f(&a.group),
                f(&a.hosts_text()),
                a.count,
                f(&a.first),
                f(&a.last)
            );
        }
        for g in &self.grants {
            let _ = writeln!(
                o,
                "grant,{},{},{},{},{},{},,,{},{}",
                f(&g.ticket),
                f(&g.id),
                f(&g.event),
                f(&g.by),
                f(&g.detail),
                g.requests_allowed,
                f(&g.scope),
                f(&g.target)
            );
        }
        o
    }

    /// Markdown, for email.
    pub fn markdown(&self) -> String {
        let mut o = format!(
            "# Weekly safeguarding report — {}\n\n{} to {} (generated {})\n\n",
            self.school, self.from, self.to, self.generated
        );
        let all_ok = self.integrity.iter().all(|i| i.ok);
        let _ = writeln!(
            o,
            "**Log integrity:** {}\n",
            if all_ok {
                "verified"
            } else {
                "A LOG DID NOT VERIFY — figures may be incomplete"
            }
        );
        let _ = writeln!(
            o,
            "**{}** requests ({}), **{}** blocked ({}), **{}** safeguarding alerts ({}).\n",
            self.totals.requests,
            trend(self.totals.requests, self.previous.requests),
            self.totals.blocked,
            trend(self.totals.blocked, self.previous.blocked),
            self.totals.alerts,
            trend(self.totals.alerts, self.previous.alerts)
        );
        o.push_str("## Safeguarding alerts\n\n| Category | Severity | Who | Group | Hosts | Attempts | Last |\n|---|---|---|---|---|---|---|\n");
        for a in &self.alerts {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                a.category,
                a.severity,
                a.who,
                a.group,
                a.hosts_text(),
                a.count,
                a.last
            );
        }
        o.push_str(
            "\n## Search terms of concern\n\n| First | Who | Group | Terms | Times |\n|---|---|---|---|---|\n",
        );
        for s in &self.searches {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                s.time,
                s.who,
                s.group,
                s.terms.join(", "),
                s.count
            );
        }
        o.push_str("\n## Attempts to get round the filter\n\n| Kind | Who | Group | Host | Attempts |\n|---|---|---|---|---|\n");
        for b in &self.bypass {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                b.kind, b.who, b.group, b.host, b.count
            );
        }
        o.push_str("\n## By group\n\n| Group | Requests | Blocked | Share |\n|---|---|---|---|\n");
        for g in &self.groups {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.1}% |",
                g.group,
                g.requests,
                g.blocked,
                g.blocked_share * 100.0
            );
        }
        o.push_str("\n## Grants\n\n| Ticket | Grant | Event | By | For | Opens | Requests allowed |\n|---|---|---|---|---|---|---|\n");
        for g in &self.grants {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                g.ticket, g.id, g.event, g.by, g.scope, g.target, g.requests_allowed
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_counts_what_it_leaves_out() {
        // (counts, n) → (names shown, sum of the counts not shown)
        type Case<'a> = (&'a [(&'a str, u64)], usize, &'a [&'a str], u64);
        let cases: [Case; 3] = [
            (&[("a", 3), ("b", 5), ("c", 1)], 2, &["b", "a"], 1),
            (&[("a", 2), ("b", 2)], 5, &["a", "b"], 0),
            (&[("x", 1), ("y", 1), ("z", 4)], 1, &["z"], 2),
        ];
        for (counts, n, shown, left_out) in cases {
            let m: HashMap<String, u64> = counts.iter().map(|(k, c)| (k.to_string(), *c)).collect();
            let (v, rest) = top(m, n, |k| k);
            let names: Vec<&str> = v.iter().map(|c| c.name.as_str()).collect();
            assert_eq!((names.as_slice(), rest), (shown, left_out), "{counts:?}");
        }
    }

    #[test]
    fn iso_weeks_in_london() {
        let p = iso_week("2026-W47", chrono_tz::Europe::London).expect("week");
        assert_eq!(p.from.to_rfc3339(), "2026-11-16T00:00:00+00:00");
        assert_eq!(p.to.to_rfc3339(), "2026-11-23T00:00:00+00:00");
        // The week the clocks go back is 169 hours long.
        let p = iso_week("2026-W43", chrono_tz::Europe::London).expect("week");
        assert_eq!(p.from.to_rfc3339(), "2026-10-18T23:00:00+00:00");
        assert_eq!((p.to - p.from).num_hours(), 169);
        assert!(iso_week("2026-47", chrono_tz::Europe::London).is_err());
        assert!(iso_week("2026-W54", chrono_tz::Europe::London).is_err());
    }

    #[test]
    fn hosts_of_logged_urls() {
        for (url, host) in [
            ("http://a.example:8080/x?y", "a.example"),
            ("http://a.example/x", "a.example"),
            ("a.example:443", "a.example"),
            ("http://[::1]:80/", "[::1]"),
            ("10.0.0.1:443", "10.0.0.1"),
        ] {
            assert_eq!(host_of(url), host, "{url}");
        }
    }
}
