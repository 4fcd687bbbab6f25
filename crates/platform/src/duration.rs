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

/// A positive duration as a setting: read by [`parse_interval`], shown as humantime writes it
/// (`12h`), so a default defined once as a `Duration` constant is also what `--help` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl std::str::FromStr for Interval {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        parse_interval(raw).map(Self)
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

    #[test]
    fn an_interval_reads_back_what_it_shows() {
        let twelve_hours = Interval(Duration::from_secs(12 * 3600));
        assert_eq!(twelve_hours.to_string(), "12h");
        assert_eq!("12h".parse::<Interval>(), Ok(twelve_hours));
        assert!("0s".parse::<Interval>().is_err());
    }
}
