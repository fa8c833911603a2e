//! The civil calendar (proleptic Gregorian, UTC) and the times people write.
//!
//! Days since 1970-01-01 to and from dates (the key epochs of
//! [`crate::crypto::keys::Epoch`] are runs of months on this calendar), calendar month
//! arithmetic, the shape of an RFC 3339 date or date-time (the seal policies keep such
//! values readable), and the time parser of search ranges and `default_from`. Pure; the
//! callers supply "now".

/// Seconds in a civil day (UTC has no leap seconds in Unix time).
pub const SECS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 → (year, month, day). Howard Hinnant's `civil_from_days`.
pub(crate) fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        i32::try_from(y).unwrap_or(i32::MAX),
        u8::try_from(m).unwrap_or(1),
        u8::try_from(d).unwrap_or(1),
    )
}

/// (year, month, day) → days since 1970-01-01. Howard Hinnant's `days_from_civil`.
pub(crate) fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Calendar month arithmetic (the day is clamped: Mar 31 − 1 month = Feb 28/29).
fn add_months(unix: i64, months: i64) -> Option<i64> {
    let days = unix.div_euclid(SECS_PER_DAY);
    let secs = unix.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let index = i64::from(y).checked_mul(12)? + i64::from(m) - 1 + months;
    let (ny, nm) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    if !(-9999..=9999).contains(&ny) {
        return None;
    }
    let nd = i64::from(d).min(days_in_month(ny, nm));
    let days = days_from_civil(
        i32::try_from(ny).ok()?,
        u8::try_from(nm).ok()?,
        u8::try_from(nd).ok()?,
    );
    days.checked_mul(SECS_PER_DAY)?.checked_add(secs)
}

/// RFC 3339 `full-date` (`2026-11-22`) or `date-time` (`2026-11-22T10:00:00.000Z`,
/// `...+01:00`). Only the shape is checked, plus month/day/hour ranges.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: core::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
    };
    let num = |r: core::ops::Range<usize>| {
        b.get(r)
            .map(|d| d.iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0')))
            .unwrap_or(0)
    };
    if b.len() < 10
        || !digits(0..4)
        || b.get(4) != Some(&b'-')
        || !digits(5..7)
        || b.get(7) != Some(&b'-')
        || !digits(8..10)
    {
        return false;
    }
    if !(1..=12).contains(&num(5..7)) || !(1..=31).contains(&num(8..10)) {
        return false;
    }
    if b.len() == 10 {
        return true;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || !digits(11..13)
        || b.get(13) != Some(&b':')
        || !digits(14..16)
        || b.get(16) != Some(&b':')
        || !digits(17..19)
        || num(11..13) > 23
        || num(14..16) > 59
        || num(17..19) > 60
    {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            i + 6 == b.len()
                && digits(i + 1..i + 3)
                && b.get(i + 3) == Some(&b':')
                && digits(i + 4..i + 6)
        }
        _ => false,
    }
}

/// Reads a time: `now`; a relative time `-7d`, `+1h`, `now-30m` (units `s`, `m` minutes,
/// `h`, `d`, `w`, `M` calendar months, `y` calendar years); an RFC 3339 date (`2026-01-31`,
/// midnight UTC) or date-time (`2026-01-31T10:00:00Z`, `…+01:00`; fractions ignored).
/// Returns Unix seconds.
pub fn parse_time(s: &str, now_unix: i64) -> Option<i64> {
    let s = s.trim();
    if s == "now" {
        return Some(now_unix);
    }
    let rel = s.strip_prefix("now").unwrap_or(s);
    if let Some(sign) = rel.chars().next().filter(|c| *c == '-' || *c == '+') {
        let body = rel.get(1..)?;
        let unit = body.chars().last()?;
        let digits = body.get(..body.len().checked_sub(unit.len_utf8())?)?;
        if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let n: i64 = digits.parse().ok()?;
        let n = if sign == '-' { -n } else { n };
        return match unit {
            's' => now_unix.checked_add(n),
            'm' => now_unix.checked_add(n.checked_mul(60)?),
            'h' => now_unix.checked_add(n.checked_mul(3600)?),
            'd' => now_unix.checked_add(n.checked_mul(SECS_PER_DAY)?),
            'w' => now_unix.checked_add(n.checked_mul(7 * SECS_PER_DAY)?),
            'M' => add_months(now_unix, n),
            'y' => add_months(now_unix, n.checked_mul(12)?),
            _ => None,
        };
    }
    parse_rfc3339(s)
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    if !is_rfc3339(s) {
        return None;
    }
    let b = s.as_bytes();
    let num = |r: core::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if d > days_in_month(y, m) {
        return None;
    }
    let days = days_from_civil(
        i32::try_from(y).ok()?,
        u8::try_from(m).ok()?,
        u8::try_from(d).ok()?,
    );
    let mut t = days * SECS_PER_DAY;
    if b.len() == 10 {
        return Some(t);
    }
    t += num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?.min(59);
    // Skip the fraction; the offset is what is left.
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    match b.get(i) {
        Some(b'+' | b'-') => {
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            Some(if b.get(i) == Some(&b'+') {
                t - off
            } else {
                t + off
            })
        }
        _ => Some(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000; // 2026-11-18T09:46:40Z

    fn t(s: &str) -> i64 {
        parse_time(s, NOW).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn rfc3339_shapes() {
        for ok in [
            "2026-11-22",
            "2026-11-22T10:00:00Z",
            "2026-11-22T10:00:00.000Z",
            "2026-11-22t10:00:00z",
            "2026-11-22T10:00:00+01:00",
            "2026-11-22 10:00:00-05:30",
            "2016-12-31T23:59:60Z",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "2026-11",
            "2026-13-01",
            "2026-00-10",
            "2026-11-32",
            "20261122",
            "2026-11-22T",
            "2026-11-22T10:00:00",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:00:00.Z",
            "2026-11-22T10:00:00+0100",
            "Sun, 22 Nov 2026 10:00:00 GMT",
            "2026-11-22x",
            "078-05-1120",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(t("now"), NOW);
        assert_eq!(t("-7d"), NOW - 7 * 86_400);
        assert_eq!(t("now-24h"), NOW - 86_400);
        assert_eq!(t("+30m"), NOW + 1800);
        assert_eq!(t("-2w"), NOW - 14 * 86_400);
        assert_eq!(t("-90s"), NOW - 90);
        assert_eq!(t("2026-01-01"), 1_767_225_600);
        assert_eq!(t("2026-01-01T00:00:00Z"), 1_767_225_600);
        assert_eq!(t("2026-01-01T01:00:00.123+01:00"), 1_767_225_600);
        assert_eq!(t("2025-12-31T19:00:00-05:00"), 1_767_225_600);
        // Calendar months and years, the day clamped.
        assert_eq!(
            parse_time("-1M", t("2026-03-31T12:00:00Z")),
            Some(t("2026-02-28T12:00:00Z"))
        );
        assert_eq!(parse_time("-1M", t("2024-03-31")), Some(t("2024-02-29")));
        assert_eq!(parse_time("-1y", t("2026-11-18")), Some(t("2025-11-18")));
        assert_eq!(parse_time("+2M", t("2026-11-30")), Some(t("2027-01-30")));
        for bad in [
            "",
            "yesterday",
            "-7",
            "7d",
            "-d",
            "-7x",
            "-1.5d",
            "2026-02-30",
            "2026-13-01",
            "now-",
            "- 7d",
            "-9999999999d",
            "-999999999y",
        ] {
            assert_eq!(parse_time(bad, NOW), None, "{bad:?}");
        }
    }
}
