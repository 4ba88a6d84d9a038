//! Durations on the command line (`--since 1h`, `--timeout 5m`), read the
//! way the spec writes them: a number with s, m, h or d (`30s`, `5m`,
//! `2h`, `1d`, and combinations such as `1h30m`).

use std::time::Duration;

use jiff::{SignedDuration, Span, SpanRelativeTo};

/// A clap value parser: a positive duration, explained in words when not.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let parsed = trimmed.parse::<SignedDuration>().ok().or_else(|| {
        let span = trimmed.parse::<Span>().ok()?;
        span.to_duration(SpanRelativeTo::days_are_24_hours()).ok()
    });
    let explain = || format!("\"{text}\": use a number with s, m, h or d, like 30s or 5m");
    let duration = parsed.ok_or_else(explain)?;
    if duration <= SignedDuration::ZERO {
        return Err(format!(
            "\"{text}\": the duration must be more than zero, like 30s or 5m"
        ));
    }
    Duration::try_from(duration).map_err(|_| explain())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_durations_parse_and_others_are_explained() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("5x"),
            Err("\"5x\": use a number with s, m, h or d, like 30s or 5m".to_string())
        );
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
    }
}
