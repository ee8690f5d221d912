//! Timestamps and durations of the rule language, as Unix nanoseconds in an `i64`.
//!
//! Hand-written rather than taken from a date crate: the same few lines must run inside the
//! module (where every dependency costs bytes against the 256 KB budget), in the compiler and
//! in hosts, so literals, context values and host clocks go through one function. It lives in
//! the protocol crate for that reason; evaluator-core re-exports it as `evaluator_core::time`.
//! Accepted: RFC 3339 date-times (`2026-11-25T10:00:00Z`, `2026-11-25T10:00:00.5+01:00`) between years 1678 and 2261,
//! `YYYY-MM-DD` dates, and Go/CEL durations (`36h`, `1h30m`, `-2.5s`, `100ms`).

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
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

fn digits(s: &[u8], from: usize, n: usize) -> Option<i64> {
    let part = s.get(from..from + n)?;
    let mut v = 0i64;
    for &c in part {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn expect(s: &[u8], at: usize, c: u8) -> Option<()> {
    (s.get(at) == Some(&c)).then_some(())
}

/// Parses `YYYY-MM-DD` into (year, month, day), checking the day exists.
#[must_use]
pub fn parse_date(s: &str) -> Option<(i64, i64, i64)> {
    let b = s.as_bytes();
    if b.len() != 10 {
        return None;
    }
    let (y, m, d) = date_parts(b)?;
    Some((y, m, d))
}

fn date_parts(b: &[u8]) -> Option<(i64, i64, i64)> {
    let y = digits(b, 0, 4)?;
    expect(b, 4, b'-')?;
    let m = digits(b, 5, 2)?;
    expect(b, 7, b'-')?;
    let d = digits(b, 8, 2)?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some((y, m, d))
}

/// Parses an RFC 3339 date-time into Unix nanoseconds.
#[must_use]
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let (y, mo, d) = date_parts(b)?;
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let h = digits(b, 11, 2)?;
    expect(b, 13, b':')?;
    let mi = digits(b, 14, 2)?;
    expect(b, 16, b':')?;
    let sec = digits(b, 17, 2)?;
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(c - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 => {
            let oh = digits(b, i + 1, 2)?;
            expect(b, i + 3, b':')?;
            let om = digits(b, i + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    // A leap second is read as the last second of the minute.
    let sec = sec.min(59);
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

/// Parses the start of a `YYYY-MM-DD` day (UTC) into Unix nanoseconds.
#[must_use]
pub fn date_start(s: &str) -> Option<i64> {
    let (y, m, d) = parse_date(s)?;
    days_from_civil(y, m, d)
        .checked_mul(86_400)?
        .checked_mul(NANOS_PER_SEC)
}

/// Parses a Go/CEL duration (`1h30m`, `-2.5s`, `250ms`; units h, m, s, ms, us, ns).
#[must_use]
pub fn parse_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: i64 = match unit {
            "h" => 3600 * NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "s" => NANOS_PER_SEC,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let whole: i64 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut v = whole.checked_mul(scale)?;
        let mut place = scale;
        for c in frac_part.chars() {
            let digit = i64::from(c.to_digit(10)? as u8);
            place /= 10;
            v = v.checked_add(digit.checked_mul(place)?)?;
        }
        total = total.checked_add(v)?;
        rest = after;
    }
    Some(if neg { -total } else { total })
}

/// Formats Unix nanoseconds as RFC 3339 in UTC (`2026-11-25T10:00:00Z`, fraction if any).
#[must_use]
pub fn format_timestamp(nanos: i64) -> String {
    let secs = nanos.div_euclid(NANOS_PER_SEC);
    let frac = nanos.rem_euclid(NANOS_PER_SEC);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if frac != 0 {
        let f = format!("{frac:09}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_offsets_and_fractions() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_timestamp("2026-11-25T10:00:00Z"),
            Some(1_795_600_800 * NANOS_PER_SEC)
        );
        assert_eq!(
            parse_timestamp("2026-11-25T11:00:00+01:00"),
            parse_timestamp("2026-11-25T10:00:00Z")
        );
        assert_eq!(parse_timestamp("1970-01-01T00:00:00.5Z"), Some(500_000_000));
        assert_eq!(
            parse_timestamp("1969-12-31T23:59:59Z"),
            Some(-NANOS_PER_SEC)
        );
    }

    #[test]
    fn rfc3339_rejects_malformed_input() {
        for bad in [
            "",
            "2026-11-25",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T10:00:00",
            "2026-11-25T10:00:00.Z",
            "2026-11-25T10:00:00+0100",
            "２026-11-25T10:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn format_round_trips() {
        for s in [
            "2026-11-25T10:00:00Z",
            "2000-02-29T23:59:59.25Z",
            "1901-01-01T00:00:00Z",
        ] {
            let n = parse_timestamp(s).unwrap();
            assert_eq!(format_timestamp(n), s);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("36h"), Some(36 * 3600 * NANOS_PER_SEC));
        assert_eq!(parse_duration("1h30m"), Some(5400 * NANOS_PER_SEC));
        assert_eq!(parse_duration("-2.5s"), Some(-2_500_000_000));
        assert_eq!(parse_duration("100ms"), Some(100_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        for bad in ["", "h", "5", "5d", "1.2.3s", "-"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("2027-06-30"), Some((2027, 6, 30)));
        assert_eq!(parse_date("2027-02-29"), None);
        assert_eq!(parse_date("2027-6-30"), None);
    }
}
