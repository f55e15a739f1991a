//! Summaries of latency samples, computed the way vLLM's `benchmark_serving` and llmperf
//! compute them (numpy's default linear-interpolation percentiles), so our numbers and
//! theirs can be laid side by side.

use serde::Serialize;

/// The `q`-th percentile (0..=100) of `sorted` (ascending), interpolating linearly between
/// the two nearest ranks like `numpy.percentile`; `None` for no samples.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let (first, last) = (sorted.first()?, sorted.last()?);
    let rank = q.clamp(0.0, 100.0) / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    if lo == hi {
        return Some(sorted[lo]);
    }
    let (a, b) = (sorted[lo], sorted[hi]);
    let v = a + (b - a) * (rank - lo as f64);
    Some(v.clamp(*first, *last))
}

/// One metric's distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Summarises `samples` (any order); `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        // Population standard deviation, as numpy.std computes it.
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let p = |q| percentile(&v, q).unwrap_or(f64::NAN);
        Some(Self {
            count: v.len(),
            mean,
            std,
            min: v[0],
            p50: p(50.0),
            p90: p(90.0),
            p99: p(99.0),
            max: v[v.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values numpy gives: `np.percentile([1,2,3,4], [50,90,99])` = 2.5, 3.7, 3.97.
    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.5));
        assert!((percentile(&v, 90.0).unwrap() - 3.7).abs() < 1e-12);
        assert!((percentile(&v, 99.0).unwrap() - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(4.0));
    }

    /// `np.percentile(range(1, 101), [50, 90, 99])` = 50.5, 90.1, 99.01.
    #[test]
    fn percentiles_of_a_hundred() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        assert!((s.p50 - 50.5).abs() < 1e-9);
        assert!((s.p90 - 90.1).abs() < 1e-9);
        assert!((s.p99 - 99.01).abs() < 1e-9);
        assert_eq!((s.min, s.max, s.count), (1.0, 100.0, 100));
        assert!((s.mean - 50.5).abs() < 1e-9);
        // np.std(range(1, 101)) = 28.86607004772212
        assert!((s.std - 28.866_070_047_722_12).abs() < 1e-9);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
        let one = Summary::of(&[7.0]).unwrap();
        assert_eq!((one.p50, one.p99, one.std), (7.0, 7.0, 0.0));
        // Order of input does not matter.
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]), Summary::of(&[1.0, 2.0, 3.0]));
        // Out-of-range quantiles clamp.
        assert_eq!(percentile(&[1.0, 2.0], 150.0), Some(2.0));
    }
}
