//! Durations in and out: `--timeout` parsing and humane display.

use std::time::Duration;

/// What a duration looks like, for messages.
const EXPECTED: &str =
    "a number and a unit: 10s, 500ms, 1.5s, 2m, 1m30s or 1h; a bare number is seconds";

/// Parses a duration such as `10s`, `500ms`, `1.5s`, `2m`, `1m30s`, `1h`,
/// `10 s` or `1m 30s`. A bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("empty duration: expected {EXPECTED}"));
    }
    let lower = s.to_ascii_lowercase();
    if lower.trim_start_matches(['+', '-']).starts_with("inf") {
        return Err(format!("`{s}`: durations must be finite"));
    }
    let not_a_duration = || format!("`{s}` is not a duration: expected {EXPECTED}");
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_nan() {
            return Err(not_a_duration());
        }
        return secs_to_duration(secs, s);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(not_a_duration());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| not_a_duration())?;
        // `10 s`: a space may come between a number and its unit.
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "`{s}`: a unit must follow each number but the only one (expected {EXPECTED})"
                ));
            }
            unit => {
                return Err(format!(
                    "unknown unit `{unit}` in `{s}` (use ms, s, m or h)"
                ));
            }
        };
        // `1m 30s`: and between the parts.
        rest = rest[unit_len..].trim_start();
        total += value * scale;
    }
    secs_to_duration(total, s)
}

fn secs_to_duration(secs: f64, s: &str) -> Result<Duration, String> {
    if !secs.is_finite() {
        return Err(format!("`{s}`: durations must be finite"));
    }
    if secs <= 0.0 {
        return Err(format!("`{s}`: the duration must be more than zero"));
    }
    // Every step is bounded in whole milliseconds (`deadline_ms`, socket
    // timeouts): less than one is none at all.
    if secs < 0.001 {
        return Err(format!("`{s}` is too short: the least is 1ms"));
    }
    // `deadline_ms` is a u32 of milliseconds: about 49 days.
    if secs > f64::from(u32::MAX) / 1000.0 {
        return Err(format!("`{s}` is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A short humane form: `850ms`, `1.5s`, `12s`, `5m12s`, `3h05m`, `2d04h`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    if secs < 10 {
        let tenths = ms / 100;
        return if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        };
    }
    if secs < 60 {
        return format!("{secs}s");
    }
    if secs < 3600 {
        return format!("{}m{:02}s", secs / 60, secs % 60);
    }
    if secs < 86_400 {
        return format!("{}h{:02}m", secs / 3600, secs % 3600 / 60);
    }
    format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600)
}

/// Milliseconds, humanely.
pub fn human_ms(ms: u64) -> String {
    human_duration(Duration::from_millis(ms))
}

/// Milliseconds with a sensible precision: `0.42ms`, `12.3ms`, `1204ms`.
pub fn precise_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

/// Microseconds likewise: `0.42µs`, `3.2µs`, `850µs`, then milliseconds.
pub fn precise_us(us: f64) -> String {
    if us < 1.0 {
        format!("{us:.2}µs")
    } else if us < 100.0 {
        format!("{us:.1}µs")
    } else if us < 1000.0 {
        format!("{us:.0}µs")
    } else {
        precise_ms(us / 1000.0)
    }
}

/// CPU time: `0.01s`, `1.2s`, `312.4s`, then `1h05m`; tenths of a second
/// up to ten minutes, as `/proc` counts it in hundredths.
pub fn cpu_time(ms: u64) -> String {
    if ms > 0 && ms < 100 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else if ms < 600_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        human_ms(ms)
    }
}

/// A size in bytes, humanely: `512 B`, `1.5 KiB`, `12.3 MiB`, `4.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 9.95 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("10"), Duration::from_secs(10));
        assert_eq!(ok("2.5"), Duration::from_millis(2500));
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok(" 3s "), Duration::from_secs(3));
        assert_eq!(ok("10 s"), Duration::from_secs(10));
        assert_eq!(ok("1m 30s"), Duration::from_secs(90));
        assert_eq!(ok("1 m 30 s"), Duration::from_secs(90));
        assert_eq!(ok("1ms"), Duration::from_millis(1));
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        let err = |s: &str| parse_duration(s).unwrap_err();
        for inf in ["inf", "INF", "-inf", "infinity", "inf s"] {
            assert!(
                err(inf).contains("durations must be finite"),
                "{inf}: {}",
                err(inf)
            );
        }
        assert!(
            err("1e400").contains("durations must be finite"),
            "{}",
            err("1e400")
        );
        assert!(
            err("0.0001s").contains("too short: the least is 1ms"),
            "{}",
            err("0.0001s")
        );
        assert!(err("0.0005").contains("too short"), "{}", err("0.0005"));
        assert!(
            err("soon").contains("expected a number and a unit: 10s"),
            "{}",
            err("soon")
        );
        assert!(err("nan").contains("is not a duration"), "{}", err("nan"));
        assert!(err("0s").contains("more than zero"), "{}", err("0s"));
        assert!(err("10 x").contains("unknown unit `x`"), "{}", err("10 x"));
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in [
            "",
            "0",
            "0s",
            "-1",
            "s",
            "10x",
            "1m30",
            "abc",
            "nan",
            "inf",
            "1e12",
            "99999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn humanises_durations() {
        let h = |ms: u64| human_ms(ms);
        assert_eq!(h(0), "0ms");
        assert_eq!(h(850), "850ms");
        assert_eq!(h(1000), "1s");
        assert_eq!(h(1540), "1.5s");
        assert_eq!(h(12_300), "12s");
        assert_eq!(h(312_000), "5m12s");
        assert_eq!(h(3_600_000 * 3 + 5 * 60_000), "3h05m");
        assert_eq!(h(86_400_000 * 2 + 4 * 3_600_000), "2d04h");
    }

    #[test]
    fn precise_milliseconds() {
        assert_eq!(precise_ms(0.4242), "0.42ms");
        assert_eq!(precise_ms(12.34), "12.3ms");
        assert_eq!(precise_ms(1204.4), "1204ms");
    }

    #[test]
    fn precise_microseconds() {
        assert_eq!(precise_us(0.4242), "0.42µs");
        assert_eq!(precise_us(3.21), "3.2µs");
        assert_eq!(precise_us(850.0), "850µs");
        assert_eq!(precise_us(1500.0), "1.5ms");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 * 1024 * 1024 + 300 * 1024), "12 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(human_bytes(10 * 1024 * 1024 - 1), "10 MiB");
        assert_eq!(human_bytes(u64::MAX), "16384 PiB");
    }

    #[test]
    fn cpu_times() {
        assert_eq!(cpu_time(0), "0.0s");
        assert_eq!(cpu_time(10), "0.01s");
        assert_eq!(cpu_time(200), "0.2s");
        assert_eq!(cpu_time(1230), "1.2s");
        assert_eq!(cpu_time(312_400), "312.4s");
        assert_eq!(cpu_time(3_900_000), "1h05m");
    }
}
