//! What tokens cost: a model's USD price per million input and output tokens, converted to
//! the token type an account pays with. Everything is exact; the final conversion rounds up
//! at the 18th decimal, the only rounding there is.

use serde::{Deserialize, Serialize};

use crate::money::Amount;
use crate::store::TokenType;

/// USD per million tokens of one model (the tier's price).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub input_usd_per_m: Amount,
    pub output_usd_per_m: Amount,
}

impl Default for ModelPrice {
    fn default() -> Self {
        Self {
            input_usd_per_m: Amount::from_millis(300),
            output_usd_per_m: Amount::from_millis(900),
        }
    }
}

/// USD value of one unit of each token type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenRates {
    /// 1 Spark = $0.005 of GPU time.
    pub spark_usd: Amount,
    /// Configurable; the same as Spark unless set.
    pub sogni_usd: Amount,
}

impl Default for TokenRates {
    fn default() -> Self {
        Self {
            spark_usd: Amount::from_millis(5),
            sogni_usd: Amount::from_millis(5),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PricingError {
    #[error("the {0} rate must be positive")]
    BadRate(&'static str),
    #[error("the price is too large to represent")]
    Overflow,
}

impl ModelPrice {
    /// The price of `prompt` input and `completion` output tokens in `token`.
    pub fn cost(
        &self,
        rates: &TokenRates,
        prompt: u64,
        completion: u64,
        token: TokenType,
    ) -> Result<Amount, PricingError> {
        let rate = match token {
            TokenType::Spark => rates.spark_usd,
            TokenType::Sogni => rates.sogni_usd,
        };
        let micro_usd = self
            .input_usd_per_m
            .checked_mul_int(prompt)
            .and_then(|i| i.checked_add(self.output_usd_per_m.checked_mul_int(completion)?))
            .ok_or(PricingError::Overflow)?;
        if rate.is_negative() || rate == Amount::ZERO {
            return Err(PricingError::BadRate(token.name()));
        }
        let per_unit = rate
            .checked_mul_int(1_000_000)
            .ok_or(PricingError::Overflow)?;
        micro_usd.div_ceil(per_unit).ok_or(PricingError::Overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Amount {
        s.parse().unwrap()
    }

    #[test]
    fn default_prices_in_spark_are_exact() {
        let (p, r) = (ModelPrice::default(), TokenRates::default());
        // 0.30 and 0.90 USD per million at 0.005 USD per Spark: 0.00006 and 0.00018 Spark.
        assert_eq!(p.cost(&r, 1, 0, TokenType::Spark).unwrap(), a("0.00006"));
        assert_eq!(p.cost(&r, 0, 1, TokenType::Spark).unwrap(), a("0.00018"));
        assert_eq!(p.cost(&r, 1000, 500, TokenType::Spark).unwrap(), a("0.15"));
        assert_eq!(p.cost(&r, 0, 0, TokenType::Sogni).unwrap(), Amount::ZERO);
    }

    #[test]
    fn odd_rates_round_up_once() {
        let r = TokenRates {
            spark_usd: a("0.005"),
            sogni_usd: a("0.03"),
        };
        let c = ModelPrice::default()
            .cost(&r, 1, 0, TokenType::Sogni)
            .unwrap();
        assert_eq!(c, a("0.00001")); // 0.30e-6 / 0.03, exact
        let r = TokenRates {
            spark_usd: a("0.005"),
            sogni_usd: a("0.07"),
        };
        let c = ModelPrice::default()
            .cost(&r, 1, 0, TokenType::Sogni)
            .unwrap();
        assert_eq!(c.to_string(), "0.000004285714285715");
        let zero = TokenRates {
            spark_usd: Amount::ZERO,
            sogni_usd: a("1"),
        };
        assert_eq!(
            ModelPrice::default().cost(&zero, 1, 1, TokenType::Spark),
            Err(PricingError::BadRate("spark"))
        );
    }
}
