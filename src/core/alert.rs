//! What a safeguarding alert says, and the rules for when one goes: which decision
//! alerts ([`Policy::alert_for`]), the collapse window per person and category
//! ([`Collapser`]), the overall rate limit ([`RateLimit`]), the retry back-off
//! ([`backoff`]) and the words of the email ([`Alert::subject`], [`Alert::text`]).
//!
//! Pure: every time is an argument (Unix seconds or a `DateTime`), nothing is sent or
//! stored here. The shell's `alerts` module does the sending, the outbox and the clock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::category::{AlertMode, Severity};
use crate::core::policy::Policy;

/// The category a decision alerts for, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFor {
    /// The category's name.
    pub category: String,
    /// Its severity.
    pub severity: Severity,
    /// Immediate or digest (never `None`: then there is no `AlertFor`).
    pub mode: AlertMode,
}

impl Policy {
    /// Whether a decision on `categories` (names, most severe first, as recorded) should
    /// alert: the most severe category whose mode is not `none`, provided the request was
    /// blocked or the category is marked `alert_on_allow`. A decision that found search
    /// terms uses each category's `term_alert` instead of its `alert`, blocked or not:
    /// the search itself is the concern, whatever became of the page.
    pub fn alert_for(&self, categories: &[String], blocked: bool, terms: bool) -> Option<AlertFor> {
        categories.iter().find_map(|name| {
            let c = self.category(self.category_id(name)?);
            let mode = if terms { c.term_alert } else { c.alert };
            (mode != AlertMode::None && (blocked || terms || c.alert_on_allow)).then(|| AlertFor {
                category: c.name.clone(),
                severity: c.severity,
                mode,
            })
        })
    }
}

/// What an alert shows: what DfE's filtering standard asks a report to show — who, in
/// which group, on which device, when, what (the host only for `illegal` content),
/// which category, the search term, the action and the decision's reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The school, from the policy.
    pub school: String,
    /// The signed-in user, or `-`.
    pub person: String,
    /// The group decided for.
    pub group: String,
    /// The client's address (the device).
    pub client: String,
    /// The device's name, where known (policy map or reverse DNS). Absent from alerts
    /// queued before the field, which read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The first attempt, UTC.
    pub first: DateTime<Utc>,
    /// The last attempt counted, UTC.
    pub last: DateTime<Utc>,
    /// The school's time zone (IANA name) for the local times shown.
    pub timezone: String,
    /// The URL, or only the host for an `illegal` category.
    pub url: String,
    /// The category.
    pub category: String,
    /// Its severity.
    pub severity: String,
    /// Search terms of concern found in the query.
    pub terms: Vec<String>,
    /// `block` or `allow`.
    pub action: String,
    /// The first attempt's reference, as on the block page.
    pub reference: String,
    /// Attempts this alert stands for.
    pub attempts: u32,
    /// A follow-up: further attempts after an alert already sent in the same window.
    pub follow_up: bool,
    /// A test alert from `gatehouse alerts test`.
    pub test: bool,
}

/// What is shown of a recorded URL: the whole URL, except for an `illegal` category,
/// where only the host is (the URL of illegal content must not be copied into mail
/// boxes and webhooks). Tunnels are recorded as `host:port`: the host is shown.
pub fn shown_url(url: &str, severity: Severity) -> String {
    if severity != Severity::Illegal {
        return url.to_string();
    }
    use crate::core::host::{parse_authority, Target};
    match Target::parse(url) {
        Ok(t) => t.host.to_string(),
        Err(_) => match parse_authority(url) {
            Ok((host, _)) => host.to_string(),
            // Unparseable: show nothing of it rather than risk the path.
            Err(_) => "(host not readable)".to_string(),
        },
    }
}

impl Alert {
    /// The email subject.
    pub fn subject(&self) -> String {
        let what = if self.test {
            "TEST alert".to_string()
        } else {
            format!("{} alert: {}", self.severity, self.category)
        };
        let attempts = match (self.attempts, self.follow_up) {
            (n, true) => format!(" ({n} further attempts)"),
            (1, false) => String::new(),
            (n, false) => format!(" ({n} attempts)"),
        };
        format!(
            "[Gatehouse] {what}{attempts} — {} ({})",
            self.person, self.group
        )
    }

    /// The plain-text email body: one fact a line, local time and UTC.
    pub fn text(&self) -> String {
        let tz: chrono_tz::Tz = self.timezone.parse().unwrap_or(chrono_tz::Europe::London);
        let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z");
        let utc = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%SZ");
        let mut out = String::new();
        if self.test {
            out.push_str(
                "This is a test alert from `gatehouse alerts test`: no pupil did anything.\n\n",
            );
        }
        let attempts = if self.follow_up {
            format!(
                "{} further attempts after the alert already sent",
                self.attempts
            )
        } else {
            self.attempts.to_string()
        };
        let terms = if self.terms.is_empty() {
            "-".to_string()
        } else {
            self.terms.join(", ")
        };
        for (label, value) in [
            ("School", self.school.clone()),
            ("Person", self.person.clone()),
            ("Group", self.group.clone()),
            (
                "Device",
                match &self.device {
                    Some(name) => format!("{name} ({})", self.client),
                    None => self.client.clone(),
                },
            ),
            (
                "Time",
                format!("{} ({} UTC)", local(self.first), utc(self.first)),
            ),
            (
                "Last attempt",
                format!("{} ({} UTC)", local(self.last), utc(self.last)),
            ),
            ("Attempts", attempts),
            ("Site", self.url.clone()),
            ("Category", format!("{} ({})", self.category, self.severity)),
            ("Search terms", terms),
            ("Action", self.action.clone()),
            ("Reference", self.reference.clone()),
        ] {
            out.push_str(&format!("{label:<13} {value}\n"));
        }
        if self.severity == Severity::Illegal.as_str() {
            out.push_str("\nOnly the host is shown: the address of illegal content is not copied into alerts.\n");
        }
        out.push_str("\n`gatehouse log show <reference>` shows the decision.\n");
        out
    }
}

/// One line of a digest: attempts by one person on one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestLine {
    /// The person (user or `-`).
    pub person: String,
    /// Their group.
    pub group: String,
    /// The device's address.
    pub client: String,
    /// The device's name, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The category.
    pub category: String,
    /// Attempts in the period.
    pub attempts: u32,
}

/// The hourly or daily summary of the `digest` categories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// The school.
    pub school: String,
    /// The school's time zone.
    pub timezone: String,
    /// Start of the period, UTC.
    pub from: DateTime<Utc>,
    /// End of the period, UTC.
    pub until: DateTime<Utc>,
    /// The lines, in order of arrival.
    pub lines: Vec<DigestLine>,
}

impl Digest {
    /// Counts one attempt.
    pub fn add(
        &mut self,
        person: &str,
        group: &str,
        client: &str,
        device: Option<&str>,
        category: &str,
    ) {
        match self
            .lines
            .iter_mut()
            .find(|l| l.person == person && l.client == client && l.category == category)
        {
            Some(l) => l.attempts += 1,
            None => self.lines.push(DigestLine {
                person: person.into(),
                group: group.into(),
                client: client.into(),
                device: device.map(str::to_string),
                category: category.into(),
                attempts: 1,
            }),
        }
    }

    /// The email subject.
    pub fn subject(&self) -> String {
        let n: u32 = self.lines.iter().map(|l| l.attempts).sum();
        format!("[Gatehouse] digest: {n} attempts on digest categories")
    }

    /// The plain-text email body.
    pub fn text(&self) -> String {
        let tz: chrono_tz::Tz = self.timezone.parse().unwrap_or(chrono_tz::Europe::London);
        let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z");
        let mut out = format!(
            "{}: attempts on categories set to `alert = \"digest\"`\nfrom {} to {}\n\n",
            self.school,
            local(self.from),
            local(self.until)
        );
        for l in &self.lines {
            out.push_str(&format!(
                "{:>5}  {}  {} ({}, {})\n",
                l.attempts,
                l.category,
                l.person,
                l.group,
                match &l.device {
                    Some(name) => format!("{name} {}", l.client),
                    None => l.client.clone(),
                }
            ));
        }
        out
    }
}

/// The wait before retry `attempt` (1 for the first retry): `initial` doubled each
/// time, never more than `max` (seconds).
pub fn backoff(attempt: u32, initial: u64, max: u64) -> u64 {
    let doubled = initial.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
    doubled.min(max).max(1)
}

/// Where an attempt goes in the collapse: a new alert, or counted in one not yet sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A new alert, due at this time (the caller stores it and calls
    /// [`Collapser::opened`] with its id).
    New {
        /// When it goes (Unix seconds).
        due: i64,
        /// A follow-up to an alert already sent in this window.
        follow_up: bool,
    },
    /// One more attempt for this alert, not yet sent.
    Join(u64),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: i64,
    open: Option<(u64, i64)>,
}

/// Attempts by one person on one category collapse into one alert per window: the first
/// attempt opens the window and an alert that waits `gather` seconds for more (so twenty
/// attempts in a burst say "20 attempts"); attempts after it has gone, within the
/// window, gather into one follow-up at the window's end.
#[derive(Debug, Clone)]
pub struct Collapser {
    gather: i64,
    window: i64,
    windows: HashMap<(String, String), Window>,
}

impl Collapser {
    /// A collapser with these times (seconds).
    pub fn new(gather: i64, window: i64) -> Collapser {
        Collapser {
            gather,
            window: window.max(gather),
            windows: HashMap::new(),
        }
    }

    /// Places an attempt by `person` on `category` at `now`.
    pub fn place(&mut self, person: &str, category: &str, now: i64) -> Placement {
        let key = (person.to_string(), category.to_string());
        let (gather, window) = (self.gather, self.window);
        let w = self.windows.entry(key).or_insert(Window {
            opened: i64::MIN / 2,
            open: None,
        });
        if now >= w.opened.saturating_add(window) {
            *w = Window {
                opened: now,
                open: None,
            };
            return Placement::New {
                due: now + gather,
                follow_up: false,
            };
        }
        match w.open {
            Some((id, due)) if due > now => Placement::Join(id),
            _ => Placement::New {
                due: (w.opened + window).max(now + gather),
                follow_up: true,
            },
        }
    }

    /// Records that the alert placed for `person` and `category` has id `id`, due at
    /// `due`: attempts before then join it.
    pub fn opened(&mut self, person: &str, category: &str, id: u64, due: i64) {
        if let Some(w) = self
            .windows
            .get_mut(&(person.to_string(), category.to_string()))
        {
            w.open = Some((id, due));
        }
    }

    /// Forgets windows that closed before `now`.
    pub fn prune(&mut self, now: i64) {
        let window = self.window;
        self.windows.retain(|_, w| {
            now < w.opened.saturating_add(window) || w.open.is_some_and(|(_, d)| d > now)
        });
    }
}

/// At most `per_minute` sends in any sixty seconds, over every person and category: a
/// flood (a whole class on one site) cannot turn into a flood of mail.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_minute: usize,
    sent: std::collections::VecDeque<i64>,
}

impl RateLimit {
    /// A limit of `per_minute` (at least 1).
    pub fn new(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute: (per_minute as usize).max(1),
            sent: Default::default(),
        }
    }

    /// Takes a send at `now`, or says when one will be free.
    pub fn admit(&mut self, now: i64) -> Result<(), i64> {
        while self.sent.front().is_some_and(|&t| t <= now - 60) {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.per_minute {
            return Err(self.sent.front().map_or(now, |&t| t + 60));
        }
        self.sent.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_decisions_alert() {
        use crate::core::config::{RawPolicy, Source};
        let text = r#"
[school]
name = "S"
[categories.csam]
severity = "illegal"
[categories.self-harm]
severity = "safeguarding"
[categories.pornography]
severity = "safeguarding"
alert = "none"
term_alert = "immediate"
[categories.circumvention]
severity = "inappropriate"
alert = "digest"
[categories.gambling]
severity = "inappropriate"
[categories.extremism]
severity = "safeguarding"
alert_on_allow = true
[identity]
default_group = "pupils"
[groups.pupils]
mode = "blocklist"
"#;
        let source = Source::new(std::path::Path::new("p.toml"), text);
        let raw: RawPolicy = source.parse(text).expect("parses");
        let policy = Policy::compile(raw, &source, None).expect("compiles");
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        use AlertMode::{Digest as D, Immediate as I};
        // (categories, blocked, search terms, expected (category, mode))
        type Row<'a> = (&'a [&'a str], bool, bool, Option<(&'a str, AlertMode)>);
        let rows: &[Row] = &[
            (&["csam"], true, false, Some(("csam", I))),
            (&["self-harm"], true, false, Some(("self-harm", I))),
            // allowed: only alert_on_allow categories, or a search of concern
            (&["self-harm"], false, false, None),
            (&["extremism"], false, false, Some(("extremism", I))),
            (&["self-harm"], false, true, Some(("self-harm", I))),
            // alert = none, but its search terms alert
            (&["pornography"], true, false, None),
            (&["pornography"], true, true, Some(("pornography", I))),
            (&["circumvention"], true, false, Some(("circumvention", D))),
            // inappropriate: none by default
            (&["gambling"], true, false, None),
            // the most severe category that alerts names the alert
            (
                &["pornography", "gambling", "circumvention"],
                true,
                false,
                Some(("circumvention", D)),
            ),
            (&["csam", "self-harm"], true, false, Some(("csam", I))),
            (&["unknown"], true, false, None),
            (&[], true, false, None),
        ];
        for &(categories, blocked, terms, want) in rows {
            let got = policy.alert_for(&names(categories), blocked, terms);
            assert_eq!(
                got.as_ref().map(|a| (a.category.as_str(), a.mode)),
                want,
                "{categories:?} blocked={blocked} terms={terms}"
            );
        }
        let a = policy
            .alert_for(&names(&["csam"]), true, false)
            .expect("alerts");
        assert_eq!(a.severity, Severity::Illegal);
    }

    #[test]
    fn an_unknown_alert_mode_is_an_error_with_its_line() {
        use crate::core::config::{RawPolicy, Source};
        let text = "[school]\nname = \"S\"\n[categories.x]\nseverity = \"safeguarding\"\nalert = \"sometimes\"\n[identity]\ndefault_group = \"g\"\n[groups.g]\nmode = \"blocklist\"\n";
        let source = Source::new(std::path::Path::new("p.toml"), text);
        let raw: RawPolicy = source.parse(text).expect("parses");
        let errors = Policy::compile(raw, &source, None).expect_err("refused");
        assert!(
            errors
                .to_string()
                .contains("p.toml:5: alert \"sometimes\" of category \"x\""),
            "{errors}"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        for (attempt, want) in [
            (1, 5),
            (2, 10),
            (3, 20),
            (4, 40),
            (7, 320),
            (8, 600),
            (40, 600),
            (0, 5),
        ] {
            assert_eq!(backoff(attempt, 5, 600), want, "attempt {attempt}");
        }
        assert_eq!(backoff(1, 0, 600), 1, "never a busy loop");
    }

    #[test]
    fn attempts_collapse_per_person_and_category() {
        use Placement::*;
        let mut c = Collapser::new(5, 600);
        // (person, category, time, placement, id the caller gives a new alert)
        let rows: &[(&str, &str, i64, Placement, Option<u64>)] = &[
            (
                "amy",
                "self-harm",
                0,
                New {
                    due: 5,
                    follow_up: false,
                },
                Some(1),
            ),
            ("amy", "self-harm", 1, Join(1), None),
            ("amy", "self-harm", 4, Join(1), None),
            // another person, another category: their own alerts
            (
                "ben",
                "self-harm",
                4,
                New {
                    due: 9,
                    follow_up: false,
                },
                Some(2),
            ),
            (
                "amy",
                "extremism",
                4,
                New {
                    due: 9,
                    follow_up: false,
                },
                Some(3),
            ),
            // alert 1 has gone: later attempts gather for the window's end
            (
                "amy",
                "self-harm",
                6,
                New {
                    due: 600,
                    follow_up: true,
                },
                Some(4),
            ),
            ("amy", "self-harm", 300, Join(4), None),
            // the window has closed: a new alert at once
            (
                "amy",
                "self-harm",
                601,
                New {
                    due: 606,
                    follow_up: false,
                },
                Some(5),
            ),
        ];
        for &(person, category, now, want, id) in rows {
            let got = c.place(person, category, now);
            assert_eq!(got, want, "{person} {category} at {now}");
            if let (New { due, .. }, Some(id)) = (got, id) {
                c.opened(person, category, id, due);
            }
        }
        // Twenty attempts in a burst: one alert.
        let mut c = Collapser::new(5, 600);
        let mut new = 0;
        for t in 0..20 {
            match c.place("amy", "self-harm", t / 5) {
                New { due, .. } => {
                    new += 1;
                    c.opened("amy", "self-harm", 1, due);
                }
                Join(_) => {}
            }
        }
        assert_eq!(new, 1);
    }

    #[test]
    fn rate_limit_over_a_minute() {
        let mut r = RateLimit::new(2);
        assert_eq!(r.admit(0), Ok(()));
        assert_eq!(r.admit(10), Ok(()));
        assert_eq!(r.admit(20), Err(60));
        assert_eq!(r.admit(60), Ok(()));
        assert_eq!(r.admit(61), Err(70));
    }

    fn alert(severity: &str, url: &str) -> Alert {
        Alert {
            school: "Test School".into(),
            person: "amy".into(),
            group: "ks3".into(),
            client: "10.0.0.7".into(),
            device: None,
            first: "2026-07-01T09:15:00Z".parse().expect("time"),
            last: "2026-07-01T09:15:04Z".parse().expect("time"),
            timezone: "Europe/London".into(),
            url: url.into(),
            category: "self-harm".into(),
            severity: severity.into(),
            terms: vec!["how to".into()],
            action: "block".into(),
            reference: "1A".into(),
            attempts: 20,
            follow_up: false,
            test: false,
        }
    }

    #[test]
    fn what_an_alert_says() {
        let a = alert("safeguarding", "http://bad.test/page?q=x");
        assert_eq!(
            a.subject(),
            "[Gatehouse] safeguarding alert: self-harm (20 attempts) — amy (ks3)"
        );
        let text = a.text();
        for line in [
            "Person        amy",
            "Group         ks3",
            "Device        10.0.0.7",
            // British Summer Time, and UTC beside it
            "Time          2026-07-01 10:15:00 BST (2026-07-01 09:15:00Z UTC)",
            "Attempts      20",
            "Site          http://bad.test/page?q=x",
            "Category      self-harm (safeguarding)",
            "Search terms  how to",
            "Action        block",
            "Reference     1A",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        let mut f = alert("safeguarding", "x");
        f.follow_up = true;
        f.attempts = 3;
        assert!(
            f.subject().contains("(3 further attempts)"),
            "{}",
            f.subject()
        );
        // With a device name: the name, the address beside it; in the webhook's JSON
        // as `device`, absent without one (outboxes written before it read unchanged).
        let mut named = alert("safeguarding", "x");
        named.device = Some("KS3-LAPTOP-07".into());
        assert!(
            named
                .text()
                .contains("Device        KS3-LAPTOP-07 (10.0.0.7)"),
            "{}",
            named.text()
        );
        let json = serde_json::to_value(&named).expect("json");
        assert_eq!(json["device"], "KS3-LAPTOP-07");
        let old = serde_json::to_value(alert("safeguarding", "x")).expect("json");
        assert!(old.get("device").is_none(), "{old}");
        let read: Alert = serde_json::from_value(old).expect("an alert without device reads");
        assert_eq!(read.device, None);
    }

    #[test]
    fn illegal_content_shows_the_host_only() {
        for (url, severity, want) in [
            (
                "http://csam.test/a/b.jpg?x=1",
                Severity::Illegal,
                "csam.test",
            ),
            ("csam.test:443", Severity::Illegal, "csam.test"),
            ("HTTP://CSAM.Test./a", Severity::Illegal, "csam.test"),
            (
                "http://bad.test/a?q=1",
                Severity::Safeguarding,
                "http://bad.test/a?q=1",
            ),
            ("::not a url::/x", Severity::Illegal, "(host not readable)"),
        ] {
            assert_eq!(shown_url(url, severity), want, "{url}");
        }
    }

    #[test]
    fn a_digest_counts_per_person_and_category() {
        let mut d = Digest {
            school: "S".into(),
            timezone: "Europe/London".into(),
            from: "2026-07-01T09:00:00Z".parse().expect("time"),
            until: "2026-07-01T10:00:00Z".parse().expect("time"),
            lines: vec![],
        };
        d.add("amy", "ks3", "10.0.0.1", None, "gambling");
        d.add("amy", "ks3", "10.0.0.1", None, "gambling");
        d.add("-", "ks2", "10.0.0.2", Some("KS2-LAPTOP-02"), "gambling");
        assert_eq!(d.lines.len(), 2);
        assert_eq!(d.lines[0].attempts, 2);
        assert_eq!(
            d.subject(),
            "[Gatehouse] digest: 3 attempts on digest categories"
        );
        assert!(
            d.text().contains("    2  gambling  amy (ks3, 10.0.0.1)"),
            "{}",
            d.text()
        );
        assert!(
            d.text()
                .contains("    1  gambling  - (ks2, KS2-LAPTOP-02 10.0.0.2)"),
            "{}",
            d.text()
        );
    }
}
