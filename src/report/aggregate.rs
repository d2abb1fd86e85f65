//! The one-pass aggregation behind the report: [`Builder`] takes each entry of the
//! period (and of the week before, for the trend) and keeps only aggregates whose size
//! depends on the number of distinct users, hosts and categories, never on the number of
//! records; [`Builder::finish`] sorts and trims them into a [`Report`]. Nothing about an
//! `illegal` category is kept beyond its host.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};

use super::model::{
    Alert, BypassRow, Count, DayRow, GrantRow, GrantTerms, GroupRow, Integrity, PersonRow, Report,
    SafeSearchRow, SearchRow, Totals, DEVICES_PER_PERSON,
};
use super::period::{local_midnight, Period};
use crate::core::category::Severity;
use crate::core::grants::GrantSet;
use crate::core::policy::Policy;
use crate::decision_log::{Body, Entry, GrantEvent, StoredAction};

// Aggregation keys are short strings hashed millions of times: FxHash, not SipHash
// (no attacker chooses them in a report run over a log), and hashbrown's `entry_ref`,
// which looks a key up once and allocates it only when it is new.
type HashMap<K, V> = hashbrown::HashMap<K, V, rustc_hash::FxBuildHasher>;

/// Rows kept per user for the drill-down.
const DRILLDOWN_PER_USER: usize = 200;

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
    /// Each person's device names, first seen first, at most [`DEVICES_PER_PERSON`].
    devices: HashMap<String, Vec<String>>,
    hosts: Hosts,
    /// (who, what was searched) → the search, first and last time (µs): a search
    /// repeated all week is one row with its count.
    searches: HashMap<(String, String), (SearchRow, i64, i64)>,
    bypass: HashMap<(String, String, String, String), u64>,
    groups: HashMap<String, GroupAcc>,
    /// (group, engine, level, name dialled) → requests with safe search enforced.
    safe_search: HashMap<(String, String, &'static str, String), u64>,
    grant_events: Vec<GrantRow>,
    grant_use: HashMap<String, u64>,
    /// (node, decision) → when an alert about it was first delivered (µs).
    alerted: HashMap<(String, u64), i64>,
    /// (node, decision) acknowledged by the DSL.
    acked: std::collections::HashSet<(String, u64)>,
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
            safe_search: HashMap::default(),
            people: HashMap::default(),
            devices: HashMap::default(),
            hosts: Hosts::default(),
            grant_events: Vec::new(),
            grant_use: HashMap::default(),
            alerted: HashMap::default(),
            acked: Default::default(),
            day_starts: daily
                .keys()
                .filter_map(|d| {
                    local_midnight(*d, policy.timezone).map(|t| (t.timestamp_micros(), *d))
                })
                .collect(),
            daily,
        }
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
                if let Some(device) = &d.device {
                    let names = self.devices.entry_ref(who.as_ref()).or_default();
                    if names.len() < DEVICES_PER_PERSON && !names.contains(device) {
                        names.push(device.clone());
                    }
                }
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
                if let Some(r) = &d.safe_search {
                    *self
                        .safe_search
                        .entry((
                            d.group.clone(),
                            r.engine.clone(),
                            r.level.as_str(),
                            r.dialled.clone(),
                        ))
                        .or_default() += 1;
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
                                    devices: Vec::new(),
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
                        d.reason.is_bypass().then(|| d.reason.as_str())
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
            Body::Alert { sent, of, .. } => {
                if *sent {
                    self.totals.alerts_sent += 1;
                    if *of != 0 {
                        self.alerted.entry((node.to_string(), *of)).or_insert(us);
                    }
                } else {
                    self.totals.alerts_failed += 1;
                }
            }
            Body::AlertAck { of, .. } => {
                self.totals.alerts_acknowledged += 1;
                self.acked.insert((node.to_string(), *of));
            }
            Body::Grant {
                action,
                id,
                ticket,
                by,
                detail,
            } if *action != GrantEvent::ApiList => {
                self.grant_events.push(GrantRow {
                    ticket: ticket.clone(),
                    id: id.clone(),
                    event: action.to_string(),
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
        let devices = self.devices;
        let devices_of = |who: &str| devices.get(who).cloned().unwrap_or_default();
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
                    devices: devices_of(&who),
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
                    devices: devices_of(&who),
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
                row.devices = devices_of(&row.who);
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
                devices: devices_of(&who),
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
        let mut safe_search: Vec<SafeSearchRow> = self
            .safe_search
            .into_iter()
            .map(
                |((group, engine, level, dialled), requests)| SafeSearchRow {
                    group,
                    engine,
                    level: level.to_string(),
                    dialled,
                    requests,
                },
            )
            .collect();
        safe_search.sort_by(|a, b| {
            (&a.group, &a.engine, &a.level, &a.dialled)
                .cmp(&(&b.group, &b.engine, &b.level, &b.dialled))
        });
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
        let day_before_end = (self.period.to - chrono::Duration::days(1)).timestamp_micros();
        let mut totals = self.totals;
        totals.alerts_unacknowledged_after_a_day = self
            .alerted
            .iter()
            .filter(|(key, first)| **first < day_before_end && !self.acked.contains(*key))
            .count() as u64;
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
        let (teacher_overrides, grants): (Vec<GrantRow>, Vec<GrantRow>) = grant_rows
            .into_iter()
            .partition(|r| crate::core::grants::is_lesson_ticket(&r.ticket));
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
            totals,
            previous: self.previous,
            alerts,
            searches,
            bypass,
            groups,
            safe_search,
            people,
            drilldown,
            grants,
            teacher_overrides,
            daily: self.daily.into_values().collect(),
        }
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
