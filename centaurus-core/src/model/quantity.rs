//! Kubernetes resource quantities (`500m`, `2`, `1Gi`, `1e3`).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A resource amount as written by the user; parsed on demand.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Quantity(pub String);

/// Why a quantity string did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {input:?}: {reason}")]
pub struct QuantityError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Quantity {
    /// Wraps a quantity string without checking it.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The amount in thousandths, rounded up (`500m` -> 500, `2` -> 2000, `1Ki` -> 1_024_000).
    pub fn milli_value(&self) -> Result<i64, QuantityError> {
        parse_milli(&self.0)
    }

    /// The amount in whole units, rounded up (`1Gi` -> 1_073_741_824, `500m` -> 1).
    pub fn value(&self) -> Result<i64, QuantityError> {
        let m = self.milli_value()?;
        Ok(m.div_euclid(1000) + i64::from(m.rem_euclid(1000) != 0))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Quantity {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

fn parse_milli(input: &str) -> Result<i64, QuantityError> {
    let err = |reason| QuantityError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let (negative, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err("expected a decimal number"));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.len() + frac_part.len() > 30 {
        return Err(err("too many digits"));
    }
    // Mantissa as an integer scaled by 10^-frac_len.
    let digits: i128 = format!("{int_part}{frac_part}")
        .parse()
        .map_err(|_| err("expected a decimal number"))?;
    let frac_len = frac_part.len() as u32;
    // (multiplier numerator, power of ten) of the suffix.
    let (binary, dec_exp): (i128, i32) = match suffix {
        "" => (1, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| err("invalid exponent"))?;
            if !(-18..=18).contains(&exp) {
                return Err(err("exponent out of range"));
            }
            (1, exp)
        }
        _ => return Err(err("unknown suffix")),
    };
    // milli = digits * binary * 10^(dec_exp + 3 - frac_len), rounded up.
    let exp = dec_exp + 3 - frac_len as i32;
    let scaled = digits
        .checked_mul(binary)
        .ok_or_else(|| err("out of range"))?;
    let milli = if exp >= 0 {
        10i128
            .checked_pow(exp as u32)
            .and_then(|p| scaled.checked_mul(p))
            .ok_or_else(|| err("out of range"))?
    } else {
        let div = 10i128
            .checked_pow((-exp) as u32)
            .ok_or_else(|| err("out of range"))?;
        (scaled + div - 1) / div
    };
    let milli = if negative { -milli } else { milli };
    i64::try_from(milli).map_err(|_| err("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_forms() {
        let m = |s: &str| Quantity::from(s).milli_value().unwrap();
        assert_eq!(m("500m"), 500);
        assert_eq!(m("2"), 2000);
        assert_eq!(m("0.5"), 500);
        assert_eq!(m("1.5k"), 1_500_000);
        assert_eq!(m("1Ki"), 1_024_000);
        assert_eq!(Quantity::from("1Gi").value().unwrap(), 1 << 30);
        assert_eq!(Quantity::from("128974848").value().unwrap(), 128_974_848);
        assert_eq!(Quantity::from("1e3").value().unwrap(), 1000);
        assert_eq!(Quantity::from("100M").value().unwrap(), 100_000_000);
        assert_eq!(m("0.0001"), 1, "rounds up");
        assert_eq!(m("-1"), -1000);
    }

    #[test]
    fn rejects_garbage_with_reason() {
        for bad in [
            "",
            "abc",
            "1.2.3",
            "5Xi",
            "1e99",
            "99999999999999999999Ei",
            ".",
        ] {
            let e = Quantity::from(bad).milli_value().unwrap_err();
            assert_eq!(e.input, bad);
        }
    }
}
