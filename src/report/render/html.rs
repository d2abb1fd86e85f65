//! The report as HTML: one self-contained page (inline CSS and SVG charts, no scripts,
//! no fetches) that prints on A4. Every value from the log is escaped, because pupils
//! choose the URLs and search terms it shows.

use std::fmt::Write as _;

use super::trend;
use crate::report::{devices_text, Report};

fn esc(s: &str) -> String {
    crate::proxy::pages::escape(s)
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
<div><strong>{}</strong> safeguarding alerts<br><small>{}</small></div>\
<div><strong>{}</strong> alert notifications sent<br><small>{} failed attempts (retried)</small></div>\
<div><strong>{}</strong> acknowledgements by the DSL<br><small>{} alerted decisions unacknowledged after a day</small></div></div></section>",
            self.totals.requests,
            esc(&trend(self.totals.requests, self.previous.requests)),
            self.totals.blocked,
            esc(&trend(self.totals.blocked, self.previous.blocked)),
            self.totals.alerts,
            esc(&trend(self.totals.alerts, self.previous.alerts)),
            self.totals.alerts_sent,
            self.totals.alerts_failed,
            self.totals.alerts_acknowledged,
            self.totals.alerts_unacknowledged_after_a_day,
        );
        o.push_str(
            "<section aria-labelledby=\"alerts\"><h2 id=\"alerts\">Safeguarding alerts</h2>",
        );
        if self.alerts.iter().any(|a| a.severity == "illegal") {
            o.push_str("<p class=\"warn\"><strong>Illegal content:</strong> only the host is shown. Do not visit it. Report it following your safeguarding procedures (the IWF for child sexual abuse imagery, the police or ACT for terrorist content).</p>");
        }
        o.push_str(&table(
            &[
                "Category", "Severity", "Who", "Device", "Group", "Hosts", "Attempts", "First",
                "Last", "Outcome",
            ],
            self.alerts
                .iter()
                .map(|a| {
                    vec![
                        a.category.clone(),
                        a.severity.clone(),
                        a.who.clone(),
                        devices_text(&a.devices),
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
                &["First", "Who", "Device", "Group", "Terms", "Search", "Times"],
                self.searches.iter().map(|s| vec![s.time.clone(), s.who.clone(), devices_text(&s.devices), s.group.clone(), s.terms.join(", "), s.search.clone().unwrap_or_default(), s.count.to_string()]).collect()
            )
        );
        let _ = write!(
            o,
            "<section aria-labelledby=\"bypass\"><h2 id=\"bypass\">Attempts to get round the filter</h2>{}</section>",
            table(
                &["Kind", "Who", "Device", "Group", "Host", "Attempts"],
                self.bypass.iter().map(|b| vec![b.kind.clone(), b.who.clone(), devices_text(&b.devices), b.group.clone(), b.host.clone(), b.count.to_string()]).collect()
            )
        );
        let _ = write!(
            o,
            "<section aria-labelledby=\"people\"><h2 id=\"people\">Most blocked attempts in sensitive categories</h2>{}</section>",
            table(
                &["Who", "Device", "Group", "Attempts", "Categories"],
                self.people
                    .iter()
                    .map(|p| vec![p.who.clone(), devices_text(&p.devices), p.group.clone(), p.attempts.to_string(), p.by_category.iter().map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", ")])
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
            "<section aria-labelledby=\"safe-search\"><h2 id=\"safe-search\">Safe search enforced</h2>\
<p>Requests to search engines and YouTube that were sent to the engine's own safe-search address (SafeSearch, YouTube Restricted Mode), as each group's policy asks. No interception is involved.</p>{}</section>",
            table(
                &["Group", "Engine", "Level", "Sent to", "Requests"],
                self.safe_search.iter().map(|s| vec![s.group.clone(), s.engine.clone(), s.level.clone(), s.dialled.clone(), s.requests.to_string()]).collect()
            )
        );
        let _ = write!(
            o,
            "<section aria-labelledby=\"grants\"><h2 id=\"grants\">Grants (unblocks against a ticket)</h2>{}</section>",
            table(
                &["Ticket", "Grant", "Event", "By", "For", "Opens", "Reason / detail", "Requests allowed"],
                self.grants.iter().map(|g| vec![g.ticket.clone(), g.id.clone(), g.event.clone(), g.by.clone(), g.scope.clone(), g.target.clone(), g.detail.clone(), g.requests_allowed.to_string()]).collect()
            )
        );
        let _ = write!(
            o,
            "<section aria-labelledby=\"teacher-overrides\"><h2 id=\"teacher-overrides\">Teacher overrides (lesson blocks and allows)</h2>\
<p>Sites or categories a teacher closed or opened for their own classroom or class until the end of a lesson. No ticket: the reason is the record. Locked and illegal categories cannot be overridden.</p>{}</section>",
            table(
                &["Override", "Event", "Teacher", "For", "What", "Reason / detail", "Requests decided"],
                self.teacher_overrides.iter().map(|g| vec![g.id.clone(), g.event.clone(), g.by.clone(), g.scope.clone(), g.target.clone(), g.detail.clone(), g.requests_allowed.to_string()]).collect()
            )
        );
        o.push_str("</body></html>\n");
        o
    }
}
