//! The weekly safeguarding report: what the Designated Safeguarding Lead reads on Monday
//! morning, built from one or more nodes' decision logs.
//!
//! One pass over the entries of the period (and the week before, for the trend) feeds
//! aggregates whose size depends on the number of distinct users, hosts and categories,
//! never on the number of records. Nothing about an `illegal` category is kept beyond
//! its host: such URLs are never printed in full, in any format.
//!
//! | module | job |
//! | --- | --- |
//! | `period` | the period a report covers; ISO weeks in the school's time zone |
//! | `aggregate` | the one-pass [`Builder`] and what it keeps per person, group and host |
//! | `model` | the [`Report`] and its rows: what the report says |
//! | `render` | the report as HTML, CSV and Markdown (JSON is the model's `Serialize`) |

mod aggregate;
mod model;
mod period;
mod render;

pub use aggregate::Builder;
pub use model::{
    devices_text, Alert, BypassRow, Count, DayRow, GrantRow, GrantTerms, GroupRow, Integrity,
    PersonRow, Report, SafeSearchRow, SearchRow, Totals, DEVICES_PER_PERSON,
};
pub use period::{iso_week, IsoWeekError, Period};

/// The last complete ISO week before `now` in the school's time zone: what
/// `gatehouse report` and the console show when no week is asked for.
pub fn last_week(tz: chrono_tz::Tz, now: chrono::DateTime<chrono::Utc>) -> Period {
    use chrono::Datelike;
    let last = now.with_timezone(&tz).date_naive() - chrono::Duration::days(7);
    let w = last.iso_week();
    iso_week(&format!("{}-W{:02}", w.year(), w.week()), tz)
        .expect("an ISO week printed from a date parses")
}

/// Grant id → terms, from `grant_store::list`'s rows.
fn grant_terms(
    rows: &[crate::grant_store::GrantRow],
) -> std::collections::BTreeMap<String, GrantTerms> {
    use crate::core::grants::describe_terms;
    rows.iter()
        .map(|row| {
            // The same wording as the audit trail's (`Grant::terms`).
            let terms = GrantTerms {
                scope: describe_terms(&[
                    ("groups", row.groups.clone()),
                    ("users", row.users.clone()),
                    ("networks", row.subnets.clone()),
                ]),
                target: describe_terms(&[
                    ("sites", row.sites.clone()),
                    ("categories", row.categories.clone()),
                ]),
                reason: row.reason.clone(),
            };
            (row.id.clone(), terms)
        })
        .collect()
}

/// The report for `period` from the decision logs in `dirs` (each verified as it is
/// read; a fault is in the report's integrity table), with the grants file's terms for
/// each grant: what `gatehouse report` writes and the console shows. The second value
/// is why the grant table lacks scopes and targets, if the grants file could not be
/// listed.
pub fn build(
    snap: &crate::snapshot::Snapshot,
    period: Period,
    dirs: &[std::path::PathBuf],
    now: chrono::DateTime<chrono::Utc>,
) -> (Report, Option<String>) {
    let mut builder = Builder::new(&snap.policy, period);
    let mut integrity = Vec::new();
    for dir in dirs {
        let result = crate::decision_log::reader::verify_and_read(dir, &mut |node, entry| {
            builder.entry(node, entry)
        });
        integrity.push(match result {
            Ok(r) => Integrity {
                dir: dir.display().to_string(),
                ok: r.fault.is_none(),
                detail: match r.fault {
                    Some(fault) => fault.to_string(),
                    None => format!("{} entries in {} segments", r.entries, r.segments),
                },
            },
            Err(e) => Integrity {
                dir: dir.display().to_string(),
                ok: false,
                detail: e.to_string(),
            },
        });
    }
    // Who each grant covered and what it opened, from the grants file's live and
    // archived sections (revoked and expired grants stay there for the record).
    let (terms, warning) = match crate::grant_store::list(snap, now) {
        Ok(rows) => (grant_terms(&rows), None),
        Err(e) => (Default::default(), Some(e.to_string())),
    };
    (
        builder.finish(&snap.grants, &terms, integrity, now),
        warning,
    )
}
