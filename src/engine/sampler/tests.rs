//! Sampler behaviour: determinism, greedy equivalence, truncation and the penalty rules.

use super::*;

fn logits() -> Vec<f32> {
    vec![1.0, 3.0, 2.5, -1.0, 0.5, 2.9]
}

fn params(temperature: f32, top_k: usize, seed: u64) -> SamplerParams {
    SamplerParams {
        temperature,
        top_k,
        top_p: 1.0,
        min_p: 0.0,
        seed,
        ..SamplerParams::default()
    }
}

fn draw(p: SamplerParams, n: usize) -> Vec<u32> {
    let mut s = Sampler::new(p);
    (0..n).map(|_| s.sample(&mut logits(), &[])).collect()
}

#[test]
fn the_same_seed_gives_the_same_tokens() {
    assert_eq!(draw(params(1.0, 0, 7), 200), draw(params(1.0, 0, 7), 200));
    assert_ne!(draw(params(1.0, 0, 7), 200), draw(params(1.0, 0, 8), 200));
}

#[test]
fn top_k_one_equals_greedy() {
    let greedy = draw(params(0.0, 0, 1), 20);
    assert!(greedy.iter().all(|&t| t == 1));
    assert_eq!(draw(params(1.5, 1, 3), 20), greedy);
}

#[test]
fn top_k_limits_the_candidates() {
    let toks = draw(params(5.0, 2, 11), 500);
    assert!(toks.iter().all(|&t| t == 1 || t == 5), "{toks:?}");
    assert!(toks.contains(&1) && toks.contains(&5));
}

#[test]
fn top_p_and_min_p_drop_the_tail() {
    let p = SamplerParams {
        top_p: 0.5,
        ..params(1.0, 0, 3)
    };
    assert!(draw(p, 300).iter().all(|&t| t == 1 || t == 5));
    let p = SamplerParams {
        min_p: 0.5,
        ..params(1.0, 0, 3)
    };
    // exp(2.5 - 3) = 0.61 >= 0.5 survives; exp(1 - 3) does not.
    assert!(draw(p, 300).iter().all(|&t| [1, 2, 5].contains(&t)));
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
    let s = Sampler::new(SamplerParams {
        repetition_penalty: 2.0,
        ..params(0.0, 0, 0)
    });
    let mut l = logits();
    s.apply_penalties(&mut l, &[1, 3]);
    assert_eq!(l[1], 1.5);
    assert_eq!(l[3], -2.0);
    assert_eq!(l[2], 2.5, "untouched");
}

#[test]
fn frequency_and_presence_penalties_subtract_per_count_and_once() {
    let s = Sampler::new(SamplerParams {
        frequency_penalty: 0.5,
        presence_penalty: 0.25,
        ..params(0.0, 0, 0)
    });
    let mut l = logits();
    s.apply_penalties(&mut l, &[1, 1, 1, 4]);
    assert_eq!(l[1], 3.0 - 3.0 * 0.5 - 0.25);
    assert_eq!(l[4], 0.5 - 0.5 - 0.25);
    // Greedy now prefers token 5 over the penalised token 1.
    let mut s = Sampler::new(SamplerParams {
        frequency_penalty: 0.5,
        presence_penalty: 0.25,
        ..params(0.0, 0, 0)
    });
    assert_eq!(s.sample(&mut logits(), &[1, 1, 1]), 5);
}

#[test]
fn penalties_only_look_at_the_window() {
    let s = Sampler::new(SamplerParams {
        frequency_penalty: 1.0,
        penalty_last_n: 1,
        ..params(0.0, 0, 0)
    });
    let mut l = logits();
    s.apply_penalties(&mut l, &[1, 2]);
    assert_eq!(l[1], 3.0);
    assert_eq!(l[2], 1.5);
}

#[test]
fn higher_temperature_flattens_the_distribution() {
    let count = |t: f32| {
        draw(params(t, 0, 5), 2000)
            .iter()
            .filter(|&&x| x == 1)
            .count()
    };
    assert!(count(0.3) > count(3.0), "{} vs {}", count(0.3), count(3.0));
}
