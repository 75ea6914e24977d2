//! Business hours and local midnights, in a team's IANA timezone.
//!
//! The timezone database is compiled into the binary (`chrono-tz`), never read from the host,
//! so every replica computes the same opening times. All arithmetic is on UTC milliseconds
//! given by the caller; nothing here reads a clock.

use crate::error::ApplyError;
use chrono::{Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How many days ahead `next_open` looks before concluding the schedule never opens.
const OPENING_SEARCH_DAYS: u64 = 400;

/// One opening interval on a weekday, in local minutes since midnight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpeningInterval {
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    /// First open minute of the day, `0..1440`.
    pub open_minute: u16,
    /// First closed minute after the interval, `open_minute+1..=1440`.
    pub close_minute: u16,
}

/// A weekly schedule with closed dates, in the team's timezone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessHours {
    /// When the team is open. An empty list means never open (until changed).
    pub weekly: Vec<OpeningInterval>,
    /// Whole local dates (`YYYY-MM-DD`) on which the team is closed.
    pub holidays: Vec<String>,
}

/// A parsed timezone plus an optional compiled schedule, ready for queries.
#[derive(Clone, Debug)]
pub(crate) struct Calendar {
    tz: Tz,
    /// Per weekday, sorted `(open, close)` minute intervals.
    week: Option<[Vec<(u16, u16)>; 7]>,
    holidays: Vec<NaiveDate>,
}

/// Parses an IANA timezone name.
pub(crate) fn parse_timezone(name: &str, field: &'static str) -> Result<Tz, ApplyError> {
    name.parse::<Tz>().map_err(|_| ApplyError::invalid(field, format!("unknown IANA timezone {name:?}")))
}

impl Calendar {
    /// Validates and compiles a timezone and optional schedule.
    pub(crate) fn new(timezone: &str, hours: Option<&BusinessHours>) -> Result<Self, ApplyError> {
        let tz = parse_timezone(timezone, "timezone")?;
        let mut holidays = Vec::new();
        let week = match hours {
            None => None,
            Some(hours) => {
                let mut week: [Vec<(u16, u16)>; 7] = Default::default();
                for interval in &hours.weekly {
                    if interval.weekday > 6 {
                        return Err(ApplyError::invalid(
                            "business_hours.weekly.weekday",
                            format!("weekday {} is not 0 (Monday) to 6 (Sunday)", interval.weekday),
                        ));
                    }
                    if interval.open_minute >= interval.close_minute || interval.close_minute > 1440 {
                        return Err(ApplyError::invalid(
                            "business_hours.weekly",
                            format!(
                                "interval {}..{} on weekday {} must satisfy open < close <= 1440",
                                interval.open_minute, interval.close_minute, interval.weekday
                            ),
                        ));
                    }
                    if let Some(day) = week.get_mut(usize::from(interval.weekday)) {
                        day.push((interval.open_minute, interval.close_minute));
                    }
                }
                for day in &mut week {
                    day.sort_unstable();
                    for pair in day.windows(2) {
                        if let [(_, first_close), (second_open, _)] = pair
                            && second_open < first_close
                        {
                            return Err(ApplyError::invalid(
                                "business_hours.weekly",
                                "opening intervals on the same weekday overlap".to_string(),
                            ));
                        }
                    }
                }
                for holiday in &hours.holidays {
                    let date = NaiveDate::parse_from_str(holiday, "%Y-%m-%d").map_err(|_| {
                        ApplyError::invalid("business_hours.holidays", format!("{holiday:?} is not a YYYY-MM-DD date"))
                    })?;
                    holidays.push(date);
                }
                holidays.sort_unstable();
                Some(week)
            }
        };
        Ok(Self { tz, week, holidays })
    }

    fn local(&self, at_ms: i64) -> NaiveDateTime {
        match self.tz.timestamp_millis_opt(at_ms).single() {
            Some(local) => local.naive_local(),
            None => chrono::DateTime::<chrono::Utc>::UNIX_EPOCH.naive_utc(),
        }
    }

    /// UTC milliseconds of a local date and minute; a time that falls in a DST gap moves to the
    /// first valid instant after it.
    fn to_utc_ms(&self, date: NaiveDate, minute: u32) -> i64 {
        let midnight = date.and_time(NaiveTime::MIN);
        let mut local = midnight.checked_add_signed(chrono::Duration::minutes(i64::from(minute))).unwrap_or(midnight);
        for _ in 0..4 {
            if let Some(at) = self.tz.from_local_datetime(&local).earliest() {
                return at.timestamp_millis();
            }
            local = local.checked_add_signed(chrono::Duration::minutes(30)).unwrap_or(local);
        }
        local.and_utc().timestamp_millis()
    }

    /// Whether the team is open at `at_ms`. Without a schedule a team is always open.
    pub(crate) fn is_open(&self, at_ms: i64) -> bool {
        let Some(week) = &self.week else { return true };
        let local = self.local(at_ms);
        if self.holidays.binary_search(&local.date()).is_ok() {
            return false;
        }
        // At most 23 * 60 + 59: no overflow.
        let minute = local.hour().saturating_mul(60).saturating_add(local.minute()) as u16;
        Self::day(week, local.date()).iter().any(|&(open, close)| open <= minute && minute < close)
    }

    /// The first instant at or after `at_ms` at which the team is open, if any within
    /// `OPENING_SEARCH_DAYS`.
    pub(crate) fn next_open(&self, at_ms: i64) -> Option<i64> {
        let Some(week) = &self.week else {
            return Some(at_ms);
        };
        if self.is_open(at_ms) {
            return Some(at_ms);
        }
        let start = self.local(at_ms).date();
        for offset in 0..OPENING_SEARCH_DAYS {
            let date = start.checked_add_days(Days::new(offset))?;
            if self.holidays.binary_search(&date).is_ok() {
                continue;
            }
            for &(open, _) in Self::day(week, date) {
                let at = self.to_utc_ms(date, u32::from(open));
                if at > at_ms {
                    return Some(at);
                }
            }
        }
        None
    }

    /// The next local midnight strictly after `at_ms`.
    pub(crate) fn next_midnight(&self, at_ms: i64) -> i64 {
        let date = self.local(at_ms).date();
        let next = date.succ_opt().unwrap_or(date);
        let at = self.to_utc_ms(next, 0);
        if at > at_ms { at } else { at_ms.saturating_add(86_400_000) }
    }

    /// The opening intervals of `date`'s weekday.
    fn day(week: &[Vec<(u16, u16)>; 7], date: NaiveDate) -> &[(u16, u16)] {
        week.get(date.weekday().num_days_from_monday() as usize).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339).map(|d| d.timestamp_millis()).unwrap_or_default()
    }

    fn weekdays_nine_to_six() -> BusinessHours {
        BusinessHours {
            weekly: (0..5).map(|weekday| OpeningInterval { weekday, open_minute: 540, close_minute: 1080 }).collect(),
            holidays: vec!["2026-12-25".into()],
        }
    }

    #[test]
    fn opening_hours_follow_the_local_timezone() -> Result<(), ApplyError> {
        let calendar = Calendar::new("America/Sao_Paulo", Some(&weekdays_nine_to_six()))?;
        // Monday 2026-11-23 08:59 in São Paulo (UTC-3) is 11:59Z: closed; 09:00 local opens.
        assert!(!calendar.is_open(ms("2026-11-23T11:59:00Z")));
        assert!(calendar.is_open(ms("2026-11-23T12:00:00Z")));
        assert_eq!(calendar.next_open(ms("2026-11-23T11:59:00Z")), Some(ms("2026-11-23T12:00:00Z")));
        // Friday evening waits for Monday morning.
        assert_eq!(calendar.next_open(ms("2026-11-27T22:00:00Z")), Some(ms("2026-11-30T12:00:00Z")));
        // Christmas (a Friday) is a holiday: Thursday evening waits for Monday the 28th.
        assert_eq!(calendar.next_open(ms("2026-12-24T22:00:00Z")), Some(ms("2026-12-28T12:00:00Z")));
        // Midnight is local too.
        assert_eq!(calendar.next_midnight(ms("2026-11-23T12:00:00Z")), ms("2026-11-24T03:00:00Z"));
        Ok(())
    }

    #[test]
    fn bad_schedules_are_rejected_with_the_field_named() {
        let overlapping = BusinessHours {
            weekly: vec![
                OpeningInterval { weekday: 0, open_minute: 500, close_minute: 700 },
                OpeningInterval { weekday: 0, open_minute: 600, close_minute: 800 },
            ],
            holidays: vec![],
        };
        assert!(matches!(
            Calendar::new("UTC", Some(&overlapping)),
            Err(ApplyError::Invalid { field: "business_hours.weekly", .. })
        ));
        assert!(matches!(Calendar::new("Mars/Olympus", None), Err(ApplyError::Invalid { field: "timezone", .. })));
        let bad_date = BusinessHours { weekly: vec![], holidays: vec!["25/12/2026".into()] };
        assert!(matches!(
            Calendar::new("UTC", Some(&bad_date)),
            Err(ApplyError::Invalid { field: "business_hours.holidays", .. })
        ));
    }
}
