//! The one duration syntax of the config: humantime strings (`"30s"`, `"500ms"`, `"5m"`,
//! `"8h"`, `"1h 30m"`), and for compatibility plain numbers, which mean seconds (`timeout = 30`,
//! `timeout = 0.5`). The CLI's flags take the same strings.

use std::time::Duration;

/// Parses a TOML value as a duration: a humantime string or a number of seconds.
pub fn from_toml(value: &toml::Value) -> Result<Duration, String> {
    match value {
        toml::Value::String(text) => parse(text),
        toml::Value::Integer(seconds) => u64::try_from(*seconds)
            .map(Duration::from_secs)
            .map_err(|_| format!("{seconds} is negative; give a duration such as \"30s\"")),
        toml::Value::Float(seconds) => Duration::try_from_secs_f64(*seconds)
            .map_err(|_| format!("{seconds} is not a duration; give one such as \"30s\"")),
        other => Err(format!(
            "a duration is a string such as \"30s\", \"5m\", \"8h\" (or a number of seconds), not {}",
            other.type_str()
        )),
    }
}

/// Parses a duration string: humantime (`30s`, `5m`, `1h 30m`), or digits alone = seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}); use e.g. \"30s\", \"500ms\", \"5m\", \"8h\", \"1h 30m\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_plain_seconds() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("45"), Ok(Duration::from_secs(45)));
        assert!(parse("soon").unwrap_err().contains("not a duration"));
        assert!(parse("").is_err());
        assert_eq!(
            from_toml(&toml::Value::Integer(30)),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            from_toml(&toml::Value::Float(0.25)),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            from_toml(&toml::Value::String("2m".into())),
            Ok(Duration::from_secs(120))
        );
        assert!(from_toml(&toml::Value::Integer(-1)).is_err());
        assert!(from_toml(&toml::Value::Boolean(true)).is_err());
    }
}
