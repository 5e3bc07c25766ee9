//! Layer creation times: RFC 3339, UTC, nanoseconds.
//!
//! Docker records `created` with Go's `time.RFC3339Nano`; lamina writes a
//! fixed-width form of it (always nine fraction digits, `Z`), so times sort
//! as strings and round-trip exactly. The civil-date arithmetic is Howard
//! Hinnant's `days_from_civil`/`civil_from_days`, which is exact for the
//! whole proleptic Gregorian calendar; a date library would be a dependency
//! for two functions.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Error;

/// An instant, as seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub secs: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Timestamp {
    /// The current time.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (secs, nanos) = (d.as_secs() as i64, d.subsec_nanos());
                if nanos == 0 {
                    Timestamp {
                        secs: -secs,
                        nanos: 0,
                    }
                } else {
                    Timestamp {
                        secs: -secs - 1,
                        nanos: 1_000_000_000 - nanos,
                    }
                }
            }
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> SystemTime {
        if t.secs >= 0 {
            UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
                + Duration::from_nanos(t.nanos.into())
        }
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs.div_euclid(86400);
        let rem = self.secs.rem_euclid(86400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            self.nanos
        )
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    /// RFC 3339: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, up to nine
    /// fraction digits.
    fn from_str(s: &str) -> Result<Timestamp, Error> {
        let bad = || Error::InvalidArgument(format!("not an RFC 3339 time: {s:?}"));
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Result<u32, Error> {
            let part = b.get(r).ok_or_else(bad)?;
            if part.iter().all(u8::is_ascii_digit) {
                Ok(part.iter().fold(0, |n, c| n * 10 + u32::from(c - b'0')))
            } else {
                Err(bad())
            }
        };
        let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
            return Err(bad());
        }
        let (y, mo, d) = (num(0..4)? as i64, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo)
            || d == 0
            || d > days_in_month(y, mo)
            || h > 23
            || mi > 59
            || sec > 59
        {
            return Err(bad());
        }
        let mut i = 19;
        let mut nanos = 0u32;
        if sep(i, b".") {
            let start = i + 1;
            let mut end = start;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            if end == start || end - start > 9 {
                return Err(bad());
            }
            nanos = num(start..end)? * 10u32.pow((9 - (end - start)) as u32);
            i = end;
        }
        let offset: i64 = match b.get(i) {
            Some(b'Z' | b'z') if b.len() == i + 1 => 0,
            Some(c @ (b'+' | b'-')) if b.len() == i + 6 && sep(i + 3, b":") => {
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return Err(bad());
                }
                let o = i64::from(oh * 3600 + om * 60);
                if *c == b'+' {
                    o
                } else {
                    -o
                }
            }
            _ => return Err(bad()),
        };
        let secs = days_from_civil(y, mo, d) * 86400 + i64::from(h * 3600 + mi * 60 + sec) - offset;
        Ok(Timestamp { secs, nanos })
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t = Timestamp { secs: 0, nanos: 5 };
        assert_eq!(t.to_string(), "1970-01-01T00:00:00.000000005Z");
        // `date -u -d @1795427689` → Mon Nov 23 09:54:49 UTC 2026.
        let t = Timestamp {
            secs: 1_795_427_689,
            nanos: 123_456_789,
        };
        assert_eq!(t.to_string(), "2026-11-23T09:54:49.123456789Z");
        assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        assert_eq!(
            "2026-11-23T11:54:49.123456789+02:00"
                .parse::<Timestamp>()
                .unwrap(),
            t
        );
        assert_eq!(
            "2000-02-29T00:00:00Z".parse::<Timestamp>().unwrap(),
            Timestamp {
                secs: 951_782_400,
                nanos: 0
            }
        );
        assert_eq!(
            "2000-02-29T00:00:00.5Z".parse::<Timestamp>().unwrap().nanos,
            500_000_000
        );
        let before = Timestamp::from(UNIX_EPOCH - Duration::from_millis(1500));
        assert_eq!(
            before,
            Timestamp {
                secs: -2,
                nanos: 500_000_000
            }
        );
        assert_eq!(before.to_string(), "1969-12-31T23:59:58.500000000Z");
        assert_eq!(
            SystemTime::from(before),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        for bad in [
            "",
            "2001-02-29T00:00:00Z",
            "2026-11-23T08:34:49",
            "2026-11-23T08:34:49.Z",
            "2026-11-23T08:34:49.1234567890Z",
            "2026-11-23T24:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-23T08:34:49Zx",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn round_trips_every_day_of_four_centuries() {
        for day in (-146_097i64..146_097).step_by(7) {
            let t = Timestamp {
                secs: day * 86400 + 86399,
                nanos: 999_999_999,
            };
            assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }
    }
}
