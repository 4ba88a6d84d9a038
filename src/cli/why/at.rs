//! `why --at T`: an RFC 3339 instant, a wall time `HH:MM[:SS]` today in
//! the job's zone, a relative `-10m` (or `+10m`), or `now`.

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::cli::duration_arg::parse_duration;

/// The instant `text` names, read at `now` in `tz`; the error says which
/// forms are understood.
pub fn parse_at(text: &str, now: Timestamp, tz: &TimeZone) -> Result<Timestamp, String> {
    let t = text.trim();
    if t.is_empty() || t == "now" {
        return Ok(now);
    }
    if let Ok(at) = t.parse::<Timestamp>() {
        return Ok(at);
    }
    let explain = || {
        format!(
            "--at \"{text}\": use an RFC 3339 time (2026-11-22T12:00:00Z), a time HH:MM[:SS] \
             today in the job's zone ({}), a relative time like -10m, or now",
            tz.iana_name().unwrap_or("UTC")
        )
    };
    if let Some((sign, rest)) = t
        .strip_prefix('-')
        .map(|r| (-1, r))
        .or_else(|| t.strip_prefix('+').map(|r| (1, r)))
    {
        let d = parse_duration(rest).map_err(|_| explain())?;
        let d = SignedDuration::try_from(d).map_err(|_| explain())? * sign;
        return now.checked_add(d).map_err(|_| explain());
    }
    let time: Time = t.parse().map_err(|_| explain())?;
    if t.len() < 5 {
        return Err(explain());
    }
    now.to_zoned(tz.clone())
        .date()
        .to_datetime(time)
        .to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .map_err(|_| explain())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_forms_of_at() {
        let now = ts("2026-11-22T12:30:00Z");
        let jakarta = TimeZone::get("Asia/Jakarta").unwrap();
        let utc = TimeZone::UTC;
        assert_eq!(parse_at("now", now, &utc), Ok(now));
        assert_eq!(
            parse_at("2026-11-22T12:00:00Z", now, &utc),
            Ok(ts("2026-11-22T12:00:00Z"))
        );
        assert_eq!(parse_at("-10m", now, &utc), Ok(ts("2026-11-22T12:20:00Z")));
        assert_eq!(parse_at("+1h", now, &utc), Ok(ts("2026-11-22T13:30:00Z")));
        assert_eq!(parse_at("12:05", now, &utc), Ok(ts("2026-11-22T12:05:00Z")));
        // 19:30 in Jakarta is 12:30 UTC, same day.
        assert_eq!(
            parse_at("19:00:30", now, &jakarta),
            Ok(ts("2026-11-22T12:00:30Z"))
        );
    }

    #[test]
    fn malformed_at_is_explained() {
        let now = ts("2026-11-22T12:30:00Z");
        for bad in [
            "yesterday",
            "25:00",
            "-10x",
            "12",
            "2026-13-01T00:00:00Z",
            "--5m",
        ] {
            let e = parse_at(bad, now, &TimeZone::UTC).unwrap_err();
            assert!(e.contains("RFC 3339") && e.contains(bad), "{bad}: {e}");
        }
    }
}
