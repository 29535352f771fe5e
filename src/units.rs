//! The one grammar for durations and byte sizes, shared by the provider's attributes, the
//! backup job definitions and `ceso-backup`'s flags and config file.
//!
//! - Durations: `humantime`'s (`90s`, `10m`, `1h30m`, `1h 30m`, `500ms`, `2d`), or a bare
//!   number of seconds; at most [`MAX_DURATION`].
//! - Sizes and rates: `bytesize`'s (`4096`, `50M` = 50·10⁶, `4MiB` = 4·2²⁰, `1.5G`, with an
//!   optional `/s` on rates); at least one byte.

use std::time::Duration;

/// The longest duration accepted: 8760h (365 days). Longer ones are refused rather than
/// risking overflow where they are added to a clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration. Never panics: a value too large for any arithmetic is an error like any
/// other malformed one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".to_string());
    }
    // The error says whether a number was too large for any arithmetic.
    let parsed = if t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>().map(Duration::from_secs).map_err(|_| true)
    } else {
        humantime::parse_duration(t)
            .map_err(|e| matches!(e, humantime::DurationError::NumberOverflow))
    };
    match parsed {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        Ok(_) | Err(true) => Err(format!(
            "longer than the maximum of {}h (365 days)",
            MAX_DURATION.as_secs() / 3600
        )),
        Err(false) => Err("not a duration such as \"90s\", \"10m\" or \"1h30m\"".to_string()),
    }
}

/// Parses a byte size (or a rate, with an optional `/s`): at least one byte, at most
/// `u64::MAX`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
    let bad = || format!("{text:?} is not a size such as 4096, 50M or 4MiB");
    if !t.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad());
    }
    let size: bytesize::ByteSize = t.parse().map_err(|_| bad())?;
    match size.as_u64() {
        0 => Err(format!("{text:?} must be at least one byte")),
        u64::MAX => Err(format!("{text:?} is out of range")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86400)));
        for bad in ["", "5 parsecs", "soon", "m", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_huge_durations_without_panicking() {
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        for huge in [
            "8760h1s",
            "99999999999999999999h",
            "1000000000000000000000000000000000000000000s",
            &format!("{}s", "9".repeat(400)),
            "18446744073709551616s",
            "18446744073709551616",
        ] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains("maximum of 8760h"), "{huge}: {e}");
        }
    }

    #[test]
    fn parses_sizes_and_rates() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("50M"), Ok(50_000_000));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("100MiB/s"), Ok(100 << 20));
        assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
        for bad in ["x", "5 parsecs", "0", "0M", "", "-1M"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("99999999999E").is_err());
    }
}
