//! When requests are sent. Closed loop: N clients, each sending its next request as soon as
//! its last one ends, so the server sets the pace. Open loop: requests arrive as a Poisson
//! process at R per second whatever the server does (as in vLLM's `benchmark_serving`),
//! which is how real traffic behaves and what exposes queueing.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// This many clients, each with one request in flight.
    Concurrency(usize),
    /// Poisson arrivals at this many requests per second.
    Rate(f64),
}

impl Load {
    pub fn describe(self) -> String {
        match self {
            Self::Concurrency(n) => format!("concurrency {n}"),
            Self::Rate(r) => format!("{r} req/s"),
        }
    }
}

/// Arrival times of a Poisson process: exponentially distributed gaps with mean `1 / rate`.
pub struct Poisson {
    rng: StdRng,
    rate: f64,
    at: Duration,
}

impl Poisson {
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            rate,
            at: Duration::ZERO,
        }
    }
}

impl Iterator for Poisson {
    /// Offset of the next arrival from the start.
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // Inverse transform sampling; 1 - u is in (0, 1], so the logarithm is finite.
        let u: f64 = self.rng.random();
        let gap = -(1.0 - u).ln() / self.rate;
        self.at += Duration::from_secs_f64(gap);
        Some(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gaps of a Poisson process: mean 1/R and standard deviation 1/R (exponential), and
    /// counts per second with variance equal to their mean.
    #[test]
    fn arrivals_are_poisson() {
        let rate = 200.0;
        let times: Vec<f64> = Poisson::new(rate, 7)
            .take(100_000)
            .map(|d| d.as_secs_f64())
            .collect();
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((mean * rate - 1.0).abs() < 0.02, "mean gap {mean}");
        assert!((sd * rate - 1.0).abs() < 0.03, "gap sd {sd}");
        let seconds = times.last().unwrap().floor() as usize;
        let mut counts = vec![0.0f64; seconds];
        for t in &times {
            if let Some(c) = counts.get_mut(*t as usize) {
                *c += 1.0;
            }
        }
        let m = counts.iter().sum::<f64>() / counts.len() as f64;
        let var = counts.iter().map(|c| (c - m).powi(2)).sum::<f64>() / counts.len() as f64;
        assert!((m / rate - 1.0).abs() < 0.02, "mean count {m}");
        assert!((var / m - 1.0).abs() < 0.25, "dispersion {}", var / m);
        // Memorylessness: P(gap > 2/R) = e^-2.
        let long = gaps.iter().filter(|g| **g > 2.0 / rate).count() as f64 / gaps.len() as f64;
        assert!((long - (-2.0f64).exp()).abs() < 0.01, "tail {long}");
    }

    #[test]
    fn arrivals_increase_and_repeat_with_the_seed() {
        let a: Vec<Duration> = Poisson::new(50.0, 1).take(1000).collect();
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(a, Poisson::new(50.0, 1).take(1000).collect::<Vec<_>>());
        assert_ne!(a, Poisson::new(50.0, 2).take(1000).collect::<Vec<_>>());
    }
}
