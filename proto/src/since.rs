//! `since` of a log read: a duration back from now (`45s`, `10m`, `1h30m`, `2d`) or an RFC 3339
//! time. Every string [`PATTERN`] matches is a time (so an API that publishes the pattern
//! refuses nothing its spec allows): durations beyond ten years count as ten years, and a day
//! past its month's end rolls over into the next (`02-30` is March 2nd or 1st), as JavaScript's
//! `Date` does.

use std::sync::OnceLock;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use regex::Regex;

use crate::reply::ErrorBody;

/// What `since` may be (the HTTP API's spec carries the same pattern).
pub const PATTERN: &str = r"^(([0-9]{1,10}[smhd]){1,4}|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$";

/// Most a duration reaches back.
const MAX_BACK_S: i64 = 10 * 366 * 86_400;

/// The compiled [`PATTERN`] (a constant, compiled in the unit tests).
fn pattern() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(PATTERN).ok()).as_ref()
}

/// `s` as Unix seconds, relative to `now`.
pub fn unix(s: &str, now: DateTime<Utc>) -> Result<i64, ErrorBody> {
    if !pattern().is_some_and(|r| r.is_match(s)) {
        return Err(ErrorBody::bad_request(format!(
            "since {s:?} is not a duration (such as 10m, 1h30m, 45s, 2d) nor an RFC 3339 time \
             (such as 2026-12-01T10:00:00Z)"
        )));
    }
    if s.as_bytes().get(4) == Some(&b'-') {
        return Ok(time(s));
    }
    Ok(now.timestamp() - back(s))
}

/// Seconds of a duration such as `1h30m`, at most [`MAX_BACK_S`].
fn back(s: &str) -> i64 {
    let (mut total, mut n) = (0i64, 0i64);
    for c in s.chars() {
        match c.to_digit(10) {
            Some(d) => n = n.saturating_mul(10).saturating_add(i64::from(d)),
            None => {
                let unit = match c {
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86_400,
                    _ => 1,
                };
                total = total.saturating_add(n.saturating_mul(unit));
                n = 0;
            }
        }
    }
    total.min(MAX_BACK_S)
}

/// Unix seconds of a time the pattern matched (fields at fixed places).
fn time(s: &str) -> i64 {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> i64 {
        b[from..from + len]
            .iter()
            .fold(0, |n, d| n * 10 + i64::from(d - b'0'))
    };
    let (year, month, day) = (num(0, 4), num(5, 2), num(8, 2));
    // A leap second (`:60`) counts as `:59`, as chrono reads it.
    let (h, m, sec) = (num(11, 2), num(14, 2), num(17, 2).min(59));
    let first = NaiveDate::from_ymd_opt(year as i32, month as u32, 1)
        .unwrap_or_default()
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
        .timestamp();
    let offset = match s.rfind(['+', '-']).filter(|i| *i > 18) {
        Some(i) => {
            let sign = if b[i] == b'-' { -1 } else { 1 };
            sign * (num(i + 1, 2) * 3600 + num(i + 4, 2) * 60)
        }
        None => 0,
    };
    let elapsed = Duration::days(day - 1) + Duration::seconds(h * 3600 + m * 60 + sec);
    first + elapsed.num_seconds() - offset
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::ErrorCode;

    #[test]
    fn durations_and_times() {
        assert!(pattern().is_some());
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .to_utc();
        let t = now.timestamp();
        assert_eq!(unix("10m", now).unwrap(), t - 600);
        assert_eq!(unix("1h30m", now).unwrap(), t - 5400);
        assert_eq!(unix("45s", now).unwrap(), t - 45);
        assert_eq!(unix("2d", now).unwrap(), t - 172_800);
        assert_eq!(unix("9999999999d", now).unwrap(), t - MAX_BACK_S);
        assert_eq!(unix("2026-12-01T09:00:00Z", now).unwrap(), t - 3600);
        assert_eq!(unix("2026-12-01T11:30:00+02:00", now).unwrap(), t - 1800);
        assert_eq!(unix("2026-12-01t07:00:00.250-03:00", now).unwrap(), t);
        // Every time the pattern allows is one: the 30th of February rolls over.
        let feb30 = unix("2026-02-30T00:00:00Z", now).unwrap();
        let mar2 = DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z").unwrap();
        assert_eq!(feb30, mar2.timestamp());
        for ok in [
            "2026-12-01T09:00:00Z",
            "2024-02-29T23:59:60Z",
            "0000-01-01T00:00:00Z",
        ] {
            let standard = DateTime::parse_from_rfc3339(ok).map(|d| d.timestamp());
            if let Ok(expected) = standard {
                assert_eq!(unix(ok, now).unwrap(), expected, "{ok}");
            }
        }
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "-5m",
            "1h 2m",
            "2026-13-01T00:00:00Z",
            "yesterday",
        ] {
            let e = unix(bad, now).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{bad}");
        }
    }
}
