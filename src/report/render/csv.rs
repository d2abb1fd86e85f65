//! The report as CSV: the alert, grant and teacher-override tables in one sheet, for a
//! spreadsheet.
//!
//! Quoting is the `csv` crate's (RFC 4180): names, hosts and grant reasons come from
//! people and may hold commas, quotes and line breaks.

use crate::report::Report;

/// Columns of the sheet; the first says which table a row belongs to, and the others
/// are shared by the two tables where they mean something alike.
/// New columns go at the end, so a sheet made from an older report still lines up.
const HEADER: [&str; 12] = [
    "table",
    "category_or_ticket",
    "severity_or_grant",
    "who_or_event",
    "group_or_by",
    "host_or_detail",
    "count",
    "first",
    "last",
    "scope",
    "target",
    "device",
];

impl Report {
    /// CSV of the alert and grant tables (first column says which).
    pub fn csv(&self) -> String {
        let mut sheet = csv::Writer::from_writer(Vec::new());
        // A row is an array of the header's width, so the writer's one other failure
        // (rows of unequal length) cannot happen either.
        let mut row = |fields: [&str; HEADER.len()]| {
            sheet
                .write_record(fields)
                .expect("writing a row of the header's width to memory cannot fail");
        };
        row(HEADER);
        for a in &self.alerts {
            let hosts = a.hosts_text();
            let devices = a.devices.join(", ");
            let count = a.count.to_string();
            row([
                "alert",
                &a.category,
                &a.severity,
                &a.who,
                &a.group,
                &hosts,
                &count,
                &a.first,
                &a.last,
                "",
                "",
                &devices,
            ]);
        }
        for (table, rows) in [
            ("grant", &self.grants),
            ("teacher_override", &self.teacher_overrides),
        ] {
            for g in rows {
                let count = g.requests_allowed.to_string();
                row([
                    table, &g.ticket, &g.id, &g.event, &g.by, &g.detail, &count, "", "", &g.scope,
                    &g.target, "",
                ]);
            }
        }
        let bytes = sheet
            .into_inner()
            .expect("flushing a CSV writer into memory cannot fail");
        String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::report::{Alert, Count, GrantRow, Report, Totals};

    fn report(alerts: Vec<Alert>, grants: Vec<GrantRow>) -> Report {
        Report {
            school: "School".into(),
            from: String::new(),
            to: String::new(),
            generated: String::new(),
            nodes: Vec::new(),
            integrity: Vec::new(),
            totals: Totals::default(),
            previous: Totals::default(),
            alerts,
            searches: Vec::new(),
            bypass: Vec::new(),
            groups: Vec::new(),
            safe_search: Vec::new(),
            people: Vec::new(),
            drilldown: BTreeMap::new(),
            grants,
            teacher_overrides: Vec::new(),
            daily: Vec::new(),
        }
    }

    #[test]
    fn fields_people_typed_read_back_as_typed() {
        let alert = Alert {
            category: "self-harm".into(),
            severity: "safeguarding".into(),
            who: "o\"brien, pat".into(),
            devices: vec!["LIB-PC-04".into(), "iPad, \"north\"".into()],
            group: "ks4".into(),
            hosts: vec![
                Count {
                    name: "a.example".into(),
                    count: 2,
                },
                Count {
                    name: "b.example".into(),
                    count: 1,
                },
            ],
            other_hosts: 0,
            example_url: None,
            blocked: true,
            count: 3,
            first: "Mon 16 Nov 09:00".into(),
            last: "Tue 17 Nov 10:00".into(),
        };
        let grant = GrantRow {
            ticket: "HD-1".into(),
            id: "g-1".into(),
            event: "added".into(),
            by: "j.smith".into(),
            detail: "Media studies:\r\n\"music\" videos".into(),
            scope: "groups ks4, sixth-form".into(),
            target: "sites youtube.com".into(),
            requests_allowed: 7,
        };
        let text = report(vec![alert], vec![grant]).csv();
        let rows: Vec<Vec<String>> = csv::Reader::from_reader(text.as_bytes())
            .records()
            .map(|r| r.expect("a record").iter().map(str::to_string).collect())
            .collect();
        let expected: [&[&str]; 2] = [
            &[
                "alert",
                "self-harm",
                "safeguarding",
                "o\"brien, pat",
                "ks4",
                "a.example (2), b.example (1)",
                "3",
                "Mon 16 Nov 09:00",
                "Tue 17 Nov 10:00",
                "",
                "",
                "LIB-PC-04, iPad, \"north\"",
            ],
            &[
                "grant",
                "HD-1",
                "g-1",
                "added",
                "j.smith",
                "Media studies:\r\n\"music\" videos",
                "7",
                "",
                "",
                "groups ks4, sixth-form",
                "sites youtube.com",
                "",
            ],
        ];
        assert_eq!(rows, expected, "{text}");
        assert!(text.starts_with(
            "table,category_or_ticket,severity_or_grant,who_or_event,group_or_by,host_or_detail,count,first,last,scope,target,device\n"
        ));
    }
}
