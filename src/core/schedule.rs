//! Schedules: named weekly windows of local wall-clock time in a time zone.
//!
//! "Social media at break and lunch" means 10:30 on the wall clock whether the UK is on
//! GMT or BST, so windows are compared in local time: an instant is converted to the
//! schedule's zone (daylight saving handled by the tz database) and its weekday and
//! second of the day tested. Intervals are half-open: `10:30-10:45` includes 10:30:00 and
//! ends before 10:45:00.
//!
//! Pure: no I/O, and the time is always an argument.

use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// A schedule's index in its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScheduleId(u16);

impl ScheduleId {
    /// The id of the `index`th schedule.
    pub fn new(index: usize) -> ScheduleId {
        ScheduleId(index as u16)
    }

    /// Index into the policy's schedule table.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Why a window or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not `DAYS HH:MM-HH:MM`.
    #[error("window {0:?} is not of the form \"Mon-Fri 10:30-10:45\" (days, a space, start-end)")]
    Syntax(String),
    /// An unknown day.
    #[error("{0:?} is not a day: use Mon Tue Wed Thu Fri Sat Sun, a range like Mon-Fri, a list like Mon,Wed,Fri, or Daily")]
    BadDay(String),
    /// Not a 24-hour `HH:MM`.
    #[error("{0:?} is not a time: use 24-hour HH:MM (or HH:MM:SS), 00:00 to 24:00")]
    BadTime(String),
    /// End not after start.
    #[error("window {0:?} ends before it starts")]
    EndBeforeStart(String),
    /// Crosses midnight.
    #[error("window {0:?} crosses midnight: write it as two windows, e.g. \"Fri 22:00-24:00\" and \"Sat 00:00-02:00\"")]
    CrossesMidnight(String),
    /// Unknown time zone.
    #[error("unknown time zone {0:?}: use an IANA name such as \"Europe/London\"")]
    UnknownTimeZone(String),
}

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// One weekly window: a set of weekdays and a span of seconds within each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Bit 0 = Monday … bit 6 = Sunday.
    days: u8,
    /// Seconds since local midnight, start inclusive.
    start: u32,
    /// Seconds since local midnight, end exclusive (at most 86 400).
    end: u32,
}

fn parse_day(s: &str) -> Result<u32, ScheduleError> {
    let lower = s.to_ascii_lowercase();
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    for (i, full) in FULL.iter().enumerate() {
        if lower == full[..3] || lower == *full {
            return Ok(i as u32);
        }
    }
    Err(ScheduleError::BadDay(s.to_string()))
}

/// `HH:MM`, or `HH:MM:SS` (seconds are rarely wanted; a lesson that ends at 10:29:30
/// can say so), as seconds since midnight.
fn parse_time(s: &str) -> Result<u32, ScheduleError> {
    let bad = || ScheduleError::BadTime(s.to_string());
    let (h, rest) = s.split_once(':').ok_or_else(bad)?;
    let (m, sec) = match rest.split_once(':') {
        Some((m, sec)) => (m, Some(sec)),
        None => (rest, None),
    };
    if h.is_empty()
        || h.len() > 2
        || m.len() != 2
        || sec.is_some_and(|x| x.len() != 2)
        || !h
            .bytes()
            .chain(m.bytes())
            .chain(sec.unwrap_or("").bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    let sec: u32 = match sec {
        Some(x) => x.parse().map_err(|_| bad())?,
        None => 0,
    };
    if m > 59 || sec > 59 || h > 24 || (h == 24 && (m != 0 || sec != 0)) {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60 + sec)
}

/// Seconds in a day.
const DAY: u32 = 24 * 3600;

impl Window {
    /// Parses `DAYS HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<Window, ScheduleError> {
        let mut parts = s.split_whitespace();
        let (Some(days_text), Some(times), None) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ScheduleError::Syntax(s.to_string()));
        };
        let mut days = 0u8;
        if days_text.eq_ignore_ascii_case("daily") {
            days = 0x7f;
        } else {
            for item in days_text.split(',') {
                match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (parse_day(a)?, parse_day(b)?);
                        let mut d = a;
                        loop {
                            days |= 1 << d;
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => days |= 1 << parse_day(item)?,
                }
            }
        }
        let (start, end) = times
            .split_once('-')
            .ok_or_else(|| ScheduleError::Syntax(s.to_string()))?;
        let (start, end) = (parse_time(start)?, parse_time(end)?);
        if start == DAY {
            return Err(ScheduleError::BadTime(s.to_string()));
        }
        if end == start {
            return Err(ScheduleError::EndBeforeStart(s.to_string()));
        }
        if end < start {
            return Err(ScheduleError::CrossesMidnight(s.to_string()));
        }
        Ok(Window { days, start, end })
    }

    fn has_day(&self, weekday: u32) -> bool {
        self.days & (1 << weekday) != 0
    }

    fn contains_local(&self, weekday: u32, second: u32) -> bool {
        self.has_day(weekday) && self.start <= second && second < self.end
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days == 0x7f {
            f.write_str("Daily")?;
        } else {
            // Runs of consecutive days as ranges, Monday first.
            let mut first = true;
            let mut d = 0;
            while d < 7 {
                if !self.has_day(d) {
                    d += 1;
                    continue;
                }
                let start = d;
                while d + 1 < 7 && self.has_day(d + 1) {
                    d += 1;
                }
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                if d > start {
                    write!(f, "{}-{}", DAY_NAMES[start as usize], DAY_NAMES[d as usize])?;
                } else {
                    f.write_str(DAY_NAMES[start as usize])?;
                }
                d += 1;
            }
        }
        let time = |f: &mut fmt::Formatter<'_>, t: u32| {
            write!(f, "{:02}:{:02}", t / 3600, t / 60 % 60)?;
            if !t.is_multiple_of(60) {
                write!(f, ":{:02}", t % 60)?;
            }
            Ok(())
        };
        f.write_str(" ")?;
        time(f, self.start)?;
        f.write_str("-")?;
        time(f, self.end)
    }
}

/// A named set of windows in one time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its name in policy.
    pub name: String,
    /// The zone its wall-clock times are in.
    pub tz: Tz,
    /// Its windows.
    pub windows: Vec<Window>,
}

/// Parses an IANA time-zone name.
pub fn parse_tz(name: &str) -> Result<Tz, ScheduleError> {
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimeZone(name.to_string()))
}

impl Schedule {
    /// Builds a schedule from window texts.
    pub fn new(name: &str, tz: Tz, windows: &[&str]) -> Result<Schedule, ScheduleError> {
        Ok(Schedule {
            name: name.to_string(),
            tz,
            windows: windows
                .iter()
                .map(|w| Window::parse(w))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Weekday (from Monday), second of the day and date of `at` in the schedule's zone.
    /// Every request asks (group schedules, grant windows), and the zone conversion cost
    /// about 3 % of a blocked request's instructions; within one second the answer does
    /// not change, so each thread keeps the last one.
    fn local(&self, at: DateTime<Utc>) -> (u32, u32, NaiveDate) {
        type Seen = Option<(Tz, i64, (u32, u32, NaiveDate))>;
        thread_local! {
            static LAST: std::cell::Cell<Seen> = const { std::cell::Cell::new(None) };
        }
        let stamp = at.timestamp();
        if let Some((tz, s, answer)) = LAST.get() {
            if tz == self.tz && s == stamp {
                return answer;
            }
        }
        let local = at.with_timezone(&self.tz);
        let second = local.num_seconds_from_midnight();
        let answer = (
            local.weekday().num_days_from_monday(),
            second,
            local.date_naive(),
        );
        LAST.set(Some((self.tz, stamp, answer)));
        answer
    }

    /// Whether `at` falls inside any window, in local wall-clock time.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let (weekday, second, _) = self.local(at);
        self.windows
            .iter()
            .any(|w| w.contains_local(weekday, second))
    }

    /// When `at` is inside a window, the instant that window ends (windows that touch
    /// or overlap on the same day count as one). `None` outside every window.
    ///
    /// A local end time that does not exist (the spring-forward gap) ends at the first
    /// instant after the gap; one that happens twice (the autumn fall-back) ends at the
    /// later of the two, so a grant never ends early.
    pub fn current_window_end(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (weekday, second, date) = self.local(at);
        let mut end = None::<u32>;
        let mut cursor = second;
        // Extend through touching or overlapping windows until none continues.
        loop {
            let next = self
                .windows
                .iter()
                .filter(|w| w.contains_local(weekday, cursor))
                .map(|w| w.end)
                .max();
            match next {
                Some(e) if Some(e) != end => {
                    end = Some(e);
                    if e >= DAY {
                        break;
                    }
                    cursor = e;
                }
                _ => break,
            }
        }
        let end = end?;
        let (day, seconds) = if end >= DAY {
            (date.succ_opt()?, 0)
        } else {
            (date, end)
        };
        let naive = day.and_time(NaiveTime::from_num_seconds_from_midnight_opt(seconds, 0)?);
        match self.tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(_, later) => Some(later.with_timezone(&Utc)),
            LocalResult::None => {
                // In the gap: step forward a minute at a time to the first real instant.
                (1..=180).find_map(|m| {
                    self.tz
                        .from_local_datetime(&(naive + Duration::minutes(m)))
                        .earliest()
                        .map(|t| t.with_timezone(&Utc))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn london(windows: &[&str]) -> Schedule {
        Schedule::new("t", chrono_tz::Europe::London, windows).expect("test schedule")
    }

    #[test]
    fn window_parse_table() {
        type E = ScheduleError;
        let ok = |s: &str| Window::parse(s).map(|w| w.to_string());
        type Expected = Result<&'static str, fn(String) -> E>;
        let rows: &[(&str, Expected)] = &[
            ("Mon-Fri 10:30-10:45", Ok("Mon-Fri 10:30-10:45")),
            ("mon-fri 10:30-10:45", Ok("Mon-Fri 10:30-10:45")),
            ("Monday 08:00-09:00", Ok("Mon 08:00-09:00")),
            ("Sat 9:00-12:00", Ok("Sat 09:00-12:00")),
            ("Fri-Mon 18:00-24:00", Ok("Mon,Fri-Sun 18:00-24:00")),
            ("Mon,Wed,Fri 12:00-13:00", Ok("Mon,Wed,Fri 12:00-13:00")),
            ("Mon-Tue,Thu 12:00-13:00", Ok("Mon-Tue,Thu 12:00-13:00")),
            ("Daily 00:00-24:00", Ok("Daily 00:00-24:00")),
            ("Mon-Sun 07:00-08:00", Ok("Daily 07:00-08:00")),
            ("Funday 10:00-11:00", Err(E::BadDay)),
            ("Mon 25:00-26:00", Err(E::BadTime)),
            ("Mon 10:60-11:00", Err(E::BadTime)),
            ("Mon 24:00-24:00", Err(E::BadTime)),
            ("Mon 10:00-10:00", Err(E::EndBeforeStart)),
            ("Mon 22:00-02:00", Err(E::CrossesMidnight)),
            ("Mon", Err(E::Syntax)),
            ("Mon 10:00", Err(E::Syntax)),
            ("Mon 10:00-11:00 extra", Err(E::Syntax)),
            ("", Err(E::Syntax)),
            ("Mon 1000-1100", Err(E::BadTime)),
            ("Mon 10:00:30-10:01", Ok("Mon 10:00:30-10:01")),
            ("Mon 10:00-10:00:05", Ok("Mon 10:00-10:00:05")),
            ("Mon 10:00:60-11:00", Err(E::BadTime)),
            ("Mon 10:00:5-11:00", Err(E::BadTime)),
            ("Mon 24:00:01-24:00", Err(E::BadTime)),
        ];
        for (input, want) in rows {
            let got = ok(input);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{input}"),
                Err(make) => {
                    let err = got.expect_err(input);
                    assert_eq!(
                        std::mem::discriminant(&err),
                        std::mem::discriminant(&make(String::new())),
                        "{input}: {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "Mon-Fri 10:30-10:45",
            "Sat,Sun 00:00-24:00",
            "Daily 01:00-03:00",
            "Tue,Thu 09:05-09:06",
        ] {
            let w = Window::parse(s).expect("parses");
            assert_eq!(Window::parse(&w.to_string()), Ok(w));
        }
    }

    /// Break times in winter (GMT = UTC) and summer (BST = UTC+1), and around both
    /// daylight-saving changes (Sunday 2026-03-29 and Sunday 2026-10-25).
    #[test]
    fn breaks_across_daylight_saving() {
        let breaks = london(&["Mon-Fri 10:30-10:45", "Mon-Fri 12:15-13:15"]);
        let rows = [
            // winter, Tuesday 13 January 2026: local = UTC
            ("2026-01-13T10:29:59Z", false),
            ("2026-01-13T10:30:00Z", true),
            ("2026-01-13T10:44:59Z", true),
            ("2026-01-13T10:45:00Z", false),
            ("2026-01-13T12:15:00Z", true),
            ("2026-01-13T13:14:00Z", true),
            ("2026-01-13T13:15:00Z", false),
            // summer, Tuesday 16 June 2026: local = UTC+1
            ("2026-06-16T09:29:00Z", false),
            ("2026-06-16T09:30:00Z", true),
            ("2026-06-16T09:44:00Z", true),
            ("2026-06-16T09:45:00Z", false),
            ("2026-06-16T10:30:00Z", false), // 11:30 BST: a lesson
            ("2026-06-16T11:15:00Z", true),  // 12:15 BST: lunch
            // Saturday
            ("2026-01-17T10:35:00Z", false),
            // Friday before spring-forward (GMT) and Monday after (BST)
            ("2026-03-27T10:35:00Z", true),
            ("2026-03-30T10:35:00Z", false),
            ("2026-03-30T09:35:00Z", true),
            // Friday before fall-back (BST) and Monday after (GMT)
            ("2026-10-23T09:35:00Z", true),
            ("2026-10-23T10:35:00Z", false),
            ("2026-10-26T10:35:00Z", true),
            ("2026-10-26T09:35:00Z", false),
        ];
        for (at, want) in rows {
            assert_eq!(breaks.contains(utc(at)), want, "{at}");
        }
    }

    /// 01:00-02:00 local on the change Sundays: in spring that hour does not exist; in
    /// autumn it happens twice, and both happen inside the window.
    #[test]
    fn the_missing_and_repeated_hours() {
        let night = london(&["Sun 01:00-02:00"]);
        // Spring: 00:59 GMT is followed by 02:00 BST; nothing falls in the window.
        assert!(!night.contains(utc("2026-03-29T00:59:00Z")));
        assert!(!night.contains(utc("2026-03-29T01:00:00Z"))); // 02:00 BST
                                                               // Autumn: 01:30 BST (00:30Z) and 01:30 GMT (01:30Z) are both inside.
        assert!(night.contains(utc("2026-10-25T00:30:00Z")));
        assert!(night.contains(utc("2026-10-25T01:30:00Z")));
        assert!(!night.contains(utc("2026-10-25T02:00:00Z")));
    }

    #[test]
    fn current_window_end_table() {
        let lessons = london(&[
            "Mon-Fri 08:45-10:30",
            "Mon-Fri 10:45-12:15",
            "Mon-Fri 13:15-15:15",
        ]);
        let rows = [
            ("2026-01-13T09:00:00Z", Some("2026-01-13T10:30:00Z")),
            ("2026-06-16T08:00:00Z", Some("2026-06-16T09:30:00Z")), // 09:00 BST
            ("2026-01-13T10:35:00Z", None),                         // break
            ("2026-01-13T14:00:00Z", Some("2026-01-13T15:15:00Z")),
            ("2026-01-17T09:00:00Z", None), // Saturday
        ];
        // Seconds: a lesson that ends at 10:29:30 ends then.
        let short = london(&["Tue 10:00-10:29:30"]);
        assert_eq!(
            short.current_window_end(utc("2026-01-13T10:29:29Z")),
            Some(utc("2026-01-13T10:29:30Z"))
        );
        assert_eq!(short.current_window_end(utc("2026-01-13T10:29:30Z")), None);
        for (at, want) in rows {
            assert_eq!(lessons.current_window_end(utc(at)), want.map(utc), "{at}");
        }
        // Touching windows are one: a double lesson ends at the second's end.
        let double = london(&["Mon 09:00-10:00", "Mon 10:00-11:00", "Mon 10:30-11:30"]);
        assert_eq!(
            double.current_window_end(utc("2026-01-12T09:30:00Z")),
            Some(utc("2026-01-12T11:30:00Z"))
        );
        // A window to midnight ends at the next day's first instant.
        let evening = london(&["Mon 20:00-24:00"]);
        assert_eq!(
            evening.current_window_end(utc("2026-01-12T21:00:00Z")),
            Some(utc("2026-01-13T00:00:00Z"))
        );
        // Ending inside the spring gap (02:00-03:00 does not exist… in London the gap is
        // 01:00-02:00): ends at the first instant after it, 02:00 BST = 01:00Z.
        let gap = london(&["Sun 00:30-01:30"]);
        assert_eq!(
            gap.current_window_end(utc("2026-03-29T00:40:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        // Ending in the repeated autumn hour: the later 01:30 (GMT) = 01:30Z.
        let overlap = london(&["Sun 00:30-01:30"]);
        assert_eq!(
            overlap.current_window_end(utc("2026-10-24T23:40:00Z")),
            Some(utc("2026-10-25T01:30:00Z"))
        );
    }

    #[test]
    fn zones_and_seconds_asked_in_turn() {
        // The per-thread memo of the last conversion must key on zone and second: two
        // schools' zones asked alternately in one second, and the second either side of
        // a window's edge, each get their own answer.
        let london = london(&["Mon 09:00-10:00"]);
        let new_york =
            Schedule::new("t", chrono_tz::America::New_York, &["Mon 09:00-10:00"]).expect("test");
        let rows = [
            ("2026-11-23T09:30:00.100Z", true, false),
            ("2026-11-23T09:30:00.900Z", true, false),
            ("2026-11-23T14:30:00Z", false, true),
            ("2026-11-23T09:59:59.999Z", true, false),
            ("2026-11-23T10:00:00Z", false, false),
            ("2026-11-23T14:59:59Z", false, true),
        ];
        for (at, in_london, in_new_york) in rows {
            for _ in 0..2 {
                assert_eq!(london.contains(utc(at)), in_london, "London {at}");
                assert_eq!(new_york.contains(utc(at)), in_new_york, "New York {at}");
            }
        }
    }

    #[test]
    fn time_zones() {
        assert!(parse_tz("Europe/London").is_ok());
        assert!(matches!(
            parse_tz("Mars/Olympus"),
            Err(ScheduleError::UnknownTimeZone(_))
        ));
    }
}
