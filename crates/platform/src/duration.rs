//! Durations as people write them in flags and environment variables: `90s`, `15m`, `1h 30m`,
//! `250ms` (humantime's format), or plain seconds.

use std::time::Duration;

/// Parses `90s`, `10m`, `1h 30m`, `250ms` or a plain number of seconds (`90`).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration such as 90s, 10m or 1h 30m ({e})"))
}

/// Like [`parse_duration`], but zero is refused (an interval must pass).
pub fn parse_interval(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        d if d.is_zero() => Err("the interval must be positive".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_interval("0s").is_err());
        assert_eq!(parse_interval("15m"), Ok(Duration::from_secs(900)));
    }
}
