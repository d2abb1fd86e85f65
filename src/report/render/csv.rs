//! The report as CSV: the alert and grant tables in one sheet, for a spreadsheet.

use std::fmt::Write as _;

use crate::report::Report;

impl Report {
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
}
