//! Exact money: balances, prices and ledger amounts as fixed-point integers with 18 decimal
//! places, written as decimal strings. Floating point never touches a balance, so a charge
//! is exactly the price of its tokens and a hold is released to the last digit.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Decimal places kept.
const SCALE: u32 = 18;
const ONE: i128 = 10i128.pow(SCALE);

/// An amount of a token (Spark, SOGNI) or of USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i128);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a decimal amount (digits, at most one point, at most 18 decimals)")]
pub struct ParseAmountError(String);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    /// `m / 1000` exactly (for constants such as 0.005).
    pub const fn from_millis(m: i64) -> Amount {
        Amount(m as i128 * (ONE / 1000))
    }

    /// For display and estimates only (previews, capacity units): never for a balance.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / ONE as f64
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn checked_add(self, o: Amount) -> Option<Amount> {
        self.0.checked_add(o.0).map(Amount)
    }

    pub fn checked_sub(self, o: Amount) -> Option<Amount> {
        self.0.checked_sub(o.0).map(Amount)
    }

    /// `self * n`, for a count of tokens.
    pub fn checked_mul_int(self, n: u64) -> Option<Amount> {
        self.0.checked_mul(n as i128).map(Amount)
    }

    /// `self * num / den`, rounded up to the last place (a price never rounds below the real
    /// cost). `None` when `self` is negative, `den` is not positive, or the result does not
    /// fit.
    pub fn mul_div_ceil(self, num: u64, den: Amount) -> Option<Amount> {
        if den.0 <= 0 || self.0 < 0 {
            return None;
        }
        // self * num * ONE / den by long division, one decimal place at a time, so no
        // intermediate product is larger than ten times `den`.
        let a = self.0.checked_mul(num as i128)?;
        let (mut q, mut r) = (a / den.0, a % den.0);
        for _ in 0..SCALE {
            r = r.checked_mul(10)?;
            q = q.checked_mul(10)?.checked_add(r / den.0)?;
            r %= den.0;
        }
        q.checked_add(i128::from(r != 0)).map(Amount)
    }

    /// `self / d`, rounded up to the last place. `None` when `d` is not positive.
    pub fn div_ceil(self, d: Amount) -> Option<Amount> {
        self.mul_div_ceil(1, d)
    }
}

impl FromStr for Amount {
    type Err = ParseAmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseAmountError(s.to_string());
        let (neg, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && frac.is_empty()
            || !digits(whole)
            || !digits(frac)
            || frac.len() > SCALE as usize
        {
            return Err(bad());
        }
        let w: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let f: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse::<i128>().map_err(|_| bad())? * 10i128.pow(SCALE - frac.len() as u32)
        };
        let v = w
            .checked_mul(ONE)
            .and_then(|w| w.checked_add(f))
            .ok_or_else(bad)?;
        Ok(Amount(if neg { -v } else { v }))
    }
}

impl fmt::Display for Amount {
    /// The shortest exact decimal: `12`, `0.00006`, `-3.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let v = self.0.unsigned_abs();
        let (whole, frac) = (v / ONE as u128, v % ONE as u128);
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        let frac = format!("{frac:018}");
        write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Amount {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_exactly() {
        for s in ["0", "12", "0.00006", "-3.5", "123456789.000000000000000001"] {
            assert_eq!(a(s).to_string(), s);
        }
        assert_eq!(a("1.50").to_string(), "1.5");
        assert_eq!(a(".5").to_string(), "0.5");
        for bad in [
            "",
            ".",
            "1.2.3",
            "1e5",
            "abc",
            "1.0000000000000000001",
            "--1",
            "1,5",
        ] {
            assert!(bad.parse::<Amount>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn arithmetic_is_exact() {
        // 0.30 USD per million tokens is 0.00006 Spark per token at 0.005 USD per Spark.
        let per_token = a("0.30")
            .div_ceil(a("1000000"))
            .unwrap()
            .div_ceil(a("0.005"))
            .unwrap();
        assert_eq!(per_token, a("0.00006"));
        assert_eq!(per_token.checked_mul_int(12345).unwrap(), a("0.7407"));
        assert_eq!(
            a("1").div_ceil(a("3")).unwrap().to_string(),
            "0.333333333333333334"
        );
        assert_eq!(a("1").div_ceil(Amount::ZERO), None);
        assert_eq!(a("0.1").checked_add(a("0.2")).unwrap(), a("0.3"));
        // Large values do not overflow through the intermediate product.
        assert_eq!(a("750").div_ceil(a("5000")).unwrap(), a("0.15"));
        assert_eq!(
            a("0.9").mul_div_ceil(100_000_000, a("5000")).unwrap(),
            a("18000")
        );
    }

    #[test]
    fn serde_uses_decimal_strings() {
        let v = serde_json::to_value(a("2.25")).unwrap();
        assert_eq!(v, serde_json::json!("2.25"));
        assert_eq!(serde_json::from_value::<Amount>(v).unwrap(), a("2.25"));
        assert!(serde_json::from_value::<Amount>(serde_json::json!(2.25)).is_err());
    }
}
