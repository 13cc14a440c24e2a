//! Durations as operators write them on command lines: `5`, `1.5`, `2s`, `250ms`.
//!
//! A bare number is seconds, like libpq's `PGCONNECT_TIMEOUT`, so existing
//! environments keep working; a unit makes sub-second values readable.
//!
//! Every duration is at most [`MAX_DURATION`]: no timeout, interval or wait of
//! the release needs more, and a larger one is a typo (`5e10`) that would make
//! a bounded wait an endless one, or overflow the arithmetic on it.

use std::time::Duration;

/// The longest duration any flag accepts: one day.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// Parses `N`, `N.N`, `Ns` (seconds) or `Nms` (milliseconds), at most
/// [`MAX_DURATION`].
///
/// Used as a clap `value_parser`, so the error is one line naming the value.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (examples: 5, 1.5, 2s, 250ms)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("'{text}' must be a non-negative duration"));
    }
    let seconds = value * scale;
    // Compared as a float: converting first would panic above ~1.8e19 s.
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(format!(
            "'{text}' is longer than the maximum of {} s (one day)",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Like [`parse_duration`], but zero is refused: a zero timeout or interval
/// would either never wait or spin.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("'{}' must be greater than zero", text.trim()));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn units_are_understood() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 10 ms "), Ok(Duration::from_millis(10)));
    }

    #[test]
    fn garbage_and_negative_values_are_refused() {
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn zero_is_refused_where_a_positive_duration_is_needed() {
        assert!(parse_positive_duration("0").is_err());
        assert!(parse_positive_duration("0ms").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn durations_up_to_one_day_are_accepted_and_longer_ones_refused() {
        assert_eq!(parse_duration("86400"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("86400000ms"), Ok(MAX_DURATION));
        for too_long in ["86400.5", "86401s", "1e10", "1e19", "1e300", "1e303ms"] {
            let error = parse_positive_duration(too_long).unwrap_err();
            assert!(
                error.contains(too_long) && error.contains("maximum of 86400 s"),
                "{too_long}: {error}"
            );
        }
    }
}
