//! The report as Markdown, for pasting into an email.

use std::fmt::Write as _;

use super::trend;
use crate::report::{devices_text, Report};

impl Report {
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
            "**{}** requests ({}), **{}** blocked ({}), **{}** safeguarding alerts ({}); **{}** alert notifications sent to the DSL, {} failed attempts (retried); **{}** acknowledged by the DSL, {} alerted decisions unacknowledged after a day.\n",
            self.totals.requests,
            trend(self.totals.requests, self.previous.requests),
            self.totals.blocked,
            trend(self.totals.blocked, self.previous.blocked),
            self.totals.alerts,
            trend(self.totals.alerts, self.previous.alerts),
            self.totals.alerts_sent,
            self.totals.alerts_failed,
            self.totals.alerts_acknowledged,
            self.totals.alerts_unacknowledged_after_a_day
        );
        o.push_str("## Safeguarding alerts\n\n| Category | Severity | Who | Device | Group | Hosts | Attempts | Last |\n|---|---|---|---|---|---|---|---|\n");
        for a in &self.alerts {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                a.category,
                a.severity,
                a.who,
                devices_text(&a.devices),
                a.group,
                a.hosts_text(),
                a.count,
                a.last
            );
        }
        o.push_str(
            "\n## Search terms of concern\n\n| First | Who | Device | Group | Terms | Times |\n|---|---|---|---|---|---|\n",
        );
        for s in &self.searches {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                s.time,
                s.who,
                devices_text(&s.devices),
                s.group,
                s.terms.join(", "),
                s.count
            );
        }
        o.push_str("\n## Attempts to get round the filter\n\n| Kind | Who | Device | Group | Host | Attempts |\n|---|---|---|---|---|---|\n");
        for b in &self.bypass {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                b.kind,
                b.who,
                devices_text(&b.devices),
                b.group,
                b.host,
                b.count
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
        o.push_str("\n## Safe search enforced\n\n| Group | Engine | Level | Sent to | Requests |\n|---|---|---|---|---|\n");
        for s in &self.safe_search {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                s.group, s.engine, s.level, s.dialled, s.requests
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
        o.push_str("\n## Teacher overrides\n\n| Override | Event | Teacher | For | What | Requests decided |\n|---|---|---|---|---|---|\n");
        for g in &self.teacher_overrides {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                g.id, g.event, g.by, g.scope, g.target, g.requests_allowed
            );
        }
        o
    }
}
