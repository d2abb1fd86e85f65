//! The period a report covers, and reading an ISO week (`2026-W47`) in the school's
//! time zone.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

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

/// Midnight at the start of `day` in `tz`, in UTC (the earlier one where the clocks go
/// back; `None` where midnight does not exist).
pub(super) fn local_midnight(day: NaiveDate, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    tz.from_local_datetime(&day.and_hms_opt(0, 0, 0)?)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
