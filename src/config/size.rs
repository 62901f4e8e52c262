//! Sizes (`8G`, `8GiB`, `500M`, 1234) and durations (`30d`, `4w`, `1y`).
//!
//! Sizes are decimal unless the unit says `iB`: `8G` = `8GB` = 8·10⁹ bytes,
//! `8GiB` = 8·2³⁰ (docs/spec.md §4, as the old tool's `humanfriendly` parsing).

use serde::Deserialize;

/// A size or duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {text:?}: {reason}")]
pub struct ParseError {
    /// "size" or "duration".
    pub what: &'static str,
    /// The text given.
    pub text: String,
    /// Why.
    pub reason: &'static str,
}

fn split_number(t: &str) -> (&str, &str) {
    let idx = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, u) = t.split_at(idx);
    (n, u.trim())
}

/// Multiply a decimal number text (`12`, `1.5`) by `mult`, exactly.
fn scaled(num: &str, mult: u64) -> Option<u64> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int.checked_mul(mult)?;
    if !frac.is_empty() {
        if frac.len() > 18 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let f: u128 = frac.parse().ok()?;
        let denom = 10u128.pow(u32::try_from(frac.len()).ok()?);
        let extra = u64::try_from(f * u128::from(mult) / denom).ok()?;
        total = total.checked_add(extra)?;
    }
    Some(total)
}

/// Parse a size in bytes.
pub fn parse_size(text: &str) -> Result<u64, ParseError> {
    let e = |reason| ParseError {
        what: "size",
        text: text.to_string(),
        reason,
    };
    let t = text.trim();
    let (num, unit) = split_number(t);
    if num.is_empty() {
        return Err(e(
            "expected a number, optionally followed by a unit like M, GB or GiB",
        ));
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" | "byte" | "bytes" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "p" | "pb" => 1_000_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        "pi" | "pib" => 1 << 50,
        _ => {
            return Err(e(
                "unknown unit (use B, K, M, G, T, P, optionally with B or iB)",
            ))
        }
    };
    scaled(num, mult).ok_or_else(|| e("not a number, or too large"))
}

/// Parse a duration in seconds: an integer, or a number with `s`, `m`,
/// `h`, `d`, `w` or `y` (52 weeks).
pub fn parse_duration(text: &str) -> Result<u64, ParseError> {
    let e = |reason| ParseError {
        what: "duration",
        text: text.to_string(),
        reason,
    };
    let t = text.trim();
    let (num, unit) = split_number(t);
    if num.is_empty() || num.contains('.') {
        return Err(e(
            "expected a whole number, optionally followed by s, m, h, d, w or y",
        ));
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 52 * 7 * 86_400,
        _ => return Err(e("unknown unit (use s, m, h, d, w or y)")),
    };
    scaled(num, mult).ok_or_else(|| e("too large"))
}

/// A size from YAML: an integer or a size string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

/// A duration from YAML: integer seconds or a duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub u64);

struct NumberOrText {
    expecting: &'static str,
    parse: fn(&str) -> Result<u64, ParseError>,
}

impl serde::de::Visitor<'_> for NumberOrText {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText {
            expecting: "a size: a byte count or a string like 500M, 8GB, 2GiB",
            parse: parse_size,
        })
        .map(Size)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText {
            expecting: "a duration: seconds or a string like 30d, 4w, 1y",
            parse: parse_duration,
        })
        .map(Duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimal_unless_ib() {
        assert_eq!(parse_size("8G"), Ok(8_000_000_000));
        assert_eq!(parse_size("8GB"), Ok(8_000_000_000));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size(" 1.5 gb "), Ok(1_500_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("3716153344"), Ok(3_716_153_344));
    }

    #[test]
    fn bad_sizes_are_errors_naming_the_text() {
        for bad in [
            "",
            "G",
            "-1",
            "12X",
            "1.2.3G",
            "99999999999999999999",
            "18446744073709551616",
            "20000000000P",
        ] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("4w"), Ok(28 * 86_400));
        assert_eq!(parse_duration("1y"), Ok(364 * 86_400));
        assert_eq!(parse_duration("90"), Ok(90));
        assert!(parse_duration("1.5d").is_err());
        assert!(parse_duration("3q").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = parse_size(&s);
            let _ = parse_duration(&s);
        }

        #[test]
        fn formatted_sizes_round_trip(n in 0u64..1_000_000, unit in prop::sample::select(vec![("", 1u64), ("K", 1000), ("MB", 1_000_000), ("GiB", 1 << 30), ("T", 1_000_000_000_000)])) {
            prop_assert_eq!(parse_size(&format!("{n}{}", unit.0)), Ok(n * unit.1));
        }
    }
}
