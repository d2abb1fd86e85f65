//! What the report says: the [`Report`] and its row types. These are the values every
//! renderer prints and `--format json` serialises as they are; they hold text ready to
//! show (local times already formatted), never an `illegal` category's URL.

use std::collections::BTreeMap;

use serde::Serialize;

/// The most device names a report shows for one person.
pub const DEVICES_PER_PERSON: usize = 5;

/// `devices` as one cell: the names joined, or `-` when none was known.
pub fn devices_text(devices: &[String]) -> String {
    if devices.is_empty() {
        "-".to_string()
    } else {
        devices.join(", ")
    }
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
    /// The devices they used in the period, by name where known (at most
    /// [`DEVICES_PER_PERSON`], first seen first).
    pub devices: Vec<String>,
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
    /// The devices they used in the period, by name where known (at most
    /// [`DEVICES_PER_PERSON`], first seen first).
    pub devices: Vec<String>,
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
    /// one device: a burst is someone guessing), `misdirected` (another site's request
    /// inside an inspected tunnel: domain fronting).
    pub kind: String,
    /// Who.
    pub who: String,
    /// The devices they used in the period, by name where known (at most
    /// [`DEVICES_PER_PERSON`], first seen first).
    pub devices: Vec<String>,
    /// Group.
    pub group: String,
    /// Host.
    pub host: String,
    /// Attempts.
    pub count: u64,
}

/// Safe search enforced for one group on one engine: requests dialled to the engine's
/// safe-search address instead of the host asked for.
#[derive(Debug, Clone, Serialize)]
pub struct SafeSearchRow {
    /// Group.
    pub group: String,
    /// The engine's name in the policy (`google`, `youtube`).
    pub engine: String,
    /// `strict` or `moderate`.
    pub level: String,
    /// The name dialled (`forcesafesearch.google.com`).
    pub dialled: String,
    /// Requests.
    pub requests: u64,
}

/// A pupil (or device) with blocked attempts in sensitive categories.
#[derive(Debug, Clone, Serialize)]
pub struct PersonRow {
    /// Who.
    pub who: String,
    /// The devices they used in the period, by name where known (at most
    /// [`DEVICES_PER_PERSON`], first seen first).
    pub devices: Vec<String>,
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
    /// Alert notifications delivered to the DSL (each channel counts: an alert sent by
    /// email and webhook is 2).
    pub alerts_sent: u64,
    /// Failed attempts to deliver an alert notification (each was retried).
    pub alerts_failed: u64,
    /// Acknowledgements of alerts by the DSL in the period (`gatehouse alerts ack`).
    pub alerts_acknowledged: u64,
    /// Decisions alerted in the period whose alert was delivered more than a day before
    /// the period's end and that nobody has acknowledged in the logs read.
    pub alerts_unacknowledged_after_a_day: u64,
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
    /// Safe search enforced, per group and engine.
    pub safe_search: Vec<SafeSearchRow>,
    /// People with the most blocked attempts in sensitive categories.
    pub people: Vec<PersonRow>,
    /// Per-person drill-down: time, category, host.
    pub drilldown: BTreeMap<String, Vec<(String, String, String)>>,
    /// Grants (technicians', against a ticket).
    pub grants: Vec<GrantRow>,
    /// Teachers' lesson overrides (blocks and allows for one lesson, no ticket): the
    /// ticket column holds `lesson:<id>`, `requests_allowed` the requests each decided.
    pub teacher_overrides: Vec<GrantRow>,
    /// Per day.
    pub daily: Vec<DayRow>,
}
