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

/// Why a week given on the command line names no period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsoWeekError {
    /// Not written as `YYYY-Www`.
    #[error("{text:?} is not an ISO week like 2026-W47")]
    Malformed {
        /// What was given.
        text: String,
    },
    /// Well formed, but the year has no such week (weeks run 1 to 52, or 53 in some
    /// years).
    #[error("{text:?} is not an ISO week like 2026-W47")]
    NoSuchWeek {
        /// What was given.
        text: String,
    },
    /// The week starts or ends at a midnight the clocks skip in this time zone, so it
    /// has no local start or end: give the period with from and to instead.
    #[error("{text:?}: midnight on {day} does not exist in {tz} (the clocks go forward then)")]
    NoMidnight {
        /// What was given.
        text: String,
        /// The Monday without a midnight.
        day: NaiveDate,
        /// The time zone.
        tz: chrono_tz::Tz,
    },
}

/// The ISO week `YYYY-Www` in `tz`, Monday 00:00 to the next Monday 00:00 local time.
pub fn iso_week(text: &str, tz: chrono_tz::Tz) -> Result<Period, IsoWeekError> {
    let malformed = || IsoWeekError::Malformed {
        text: text.to_string(),
    };
    let (year, week) = text.split_once("-W").ok_or_else(malformed)?;
    let year: i32 = year.parse().map_err(|_| malformed())?;
    let week: u32 = week.parse().map_err(|_| malformed())?;
    let monday = NaiveDate::from_isoywd_opt(year, week, chrono::Weekday::Mon).ok_or_else(|| {
        IsoWeekError::NoSuchWeek {
            text: text.to_string(),
        }
    })?;
    let midnight = |day: NaiveDate| {
        local_midnight(day, tz).ok_or_else(|| IsoWeekError::NoMidnight {
            text: text.to_string(),
            day,
            tz,
        })
    };
    Ok(Period {
        from: midnight(monday)?,
        to: midnight(monday + chrono::Duration::days(7))?,
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
        assert!(matches!(
            iso_week("2026-47", chrono_tz::Europe::London),
            Err(IsoWeekError::Malformed { .. })
        ));
        assert!(matches!(
            iso_week("2026-W54", chrono_tz::Europe::London),
            Err(IsoWeekError::NoSuchWeek { .. })
        ));
        // Iran's clocks went forward at midnight on 1 Farvardin: on Monday 22 March 2021
        // the day began at 01:00, so week 12 had no local start.
        assert_eq!(
            iso_week("2021-W12", chrono_tz::Asia::Tehran).err(),
            Some(IsoWeekError::NoMidnight {
                text: "2021-W12".into(),
                day: NaiveDate::from_ymd_opt(2021, 3, 22).expect("date"),
                tz: chrono_tz::Asia::Tehran,
            })
        );
    }
}
