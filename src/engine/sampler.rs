//! Picking the next token from logits.
//!
//! The order follows llama.cpp's default chain: penalties, top-k, top-p, min-p, temperature,
//! then a draw. Temperature 0 (or top-k 1) is greedy: the highest logit, lowest id on ties.
//! A seeded xoshiro256** generator makes the same seed and inputs give the same tokens.
//!
//! Penalties look at the last [`SamplerParams::penalty_last_n`] tokens of the sequence
//! (prompt included): `repetition_penalty` divides positive logits and multiplies negative
//! ones (the CTRL rule); `frequency_penalty` subtracts `count * f`, and `presence_penalty`
//! subtracts `p` once for any token that occurred (OpenAI's rule).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerParams {
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables.
    pub repetition_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// How many trailing tokens the penalties consider.
    pub penalty_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }
}

/// xoshiro256**, seeded through splitmix64.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

pub struct Sampler {
    params: SamplerParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Self {
        let rng = Rng::new(params.seed);
        Self { params, rng }
    }

    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// Applies the penalties to `logits` in place, given the sequence so far.
    pub fn apply_penalties(&self, logits: &mut [f32], history: &[u32]) {
        let p = &self.params;
        if p.repetition_penalty == 1.0 && p.frequency_penalty == 0.0 && p.presence_penalty == 0.0 {
            return;
        }
        let window = &history[history.len().saturating_sub(p.penalty_last_n)..];
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in window {
            *counts.entry(t).or_default() += 1;
        }
        for (&t, &c) in &counts {
            let Some(l) = logits.get_mut(t as usize) else {
                continue;
            };
            if p.repetition_penalty != 1.0 {
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
            *l -= c as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }

    /// Whether tokens are picked without a random draw.
    fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0 || self.params.top_k == 1
    }

    /// Moves past one pick without making it: the generator advances exactly as
    /// [`Sampler::sample`] advances it (one draw, none when greedy), so a resumed generation
    /// draws what the first run would have.
    pub fn skip(&mut self) {
        if !self.is_greedy() {
            self.rng.next_f64();
        }
    }

    /// Picks the next token. `history` is the sequence so far (for penalties).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_penalties(logits, history);
        if self.is_greedy() {
            return argmax(logits);
        }
        let p = self.params.clone();
        // Candidates sorted by logit, highest first (lowest id first on ties).
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let k = if p.top_k == 0 {
            cand.len()
        } else {
            p.top_k.min(cand.len())
        };
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, by_logit);
            cand.truncate(k);
        }
        cand.sort_by(by_logit);

        let probs = softmax(&cand, 1.0);
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let keep = probs.iter().position(|&q| {
                cum += q;
                cum >= p.top_p as f64
            });
            cand.truncate(keep.map_or(cand.len(), |i| i + 1));
        }
        if p.min_p > 0.0 {
            let floor = cand[0].1 + (p.min_p as f64).ln() as f32;
            cand.retain(|&(_, l)| l >= floor);
        }
        let probs = softmax(&cand, p.temperature);
        let mut r = self.rng.next_f64();
        for (&(id, _), &q) in cand.iter().zip(&probs) {
            if r < q {
                return id;
            }
            r -= q;
        }
        cand[cand.len() - 1].0
    }
}

fn softmax(cand: &[(u32, f32)], temperature: f32) -> Vec<f64> {
    let max = cand[0].1;
    let e: Vec<f64> = cand
        .iter()
        .map(|&(_, l)| (((l - max) / temperature) as f64).exp())
        .collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Index of the largest logit, the lowest index on ties.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests;
