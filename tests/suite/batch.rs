//! The batch scheduler with the real model: sequences that share steps, chunked prompts, a
//! shared prefix, a KV pool too small for everyone, and resumed generations all produce
//! exactly what each sequence produces alone. The same holds for the qwen35moe hybrid (its
//! recurrent state carried between chunks and rebuilt on preemption and resume), on the
//! tiny reference model.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;

use supernet::engine::batch::{BatchConfig, BatchStats, Output, Request, Scheduler};
use supernet::engine::generate::{FinishReason, GenerateParams, Resume};
use supernet::engine::sampler::SamplerParams;
use supernet::engine::tokenizer::Tokenizer;
use supernet::engine::{CpuBackend, Model};

struct Setup {
    model: Arc<Model>,
    tok: Arc<Tokenizer>,
    be: CpuBackend,
}

fn setup() -> Setup {
    setup_model(common::smollm2())
}

/// The tiny random-weight qwen35moe (Gated DeltaNet + gated attention + experts).
fn hybrid() -> Setup {
    setup_model(
        common::reference()
            .join("tiny-models")
            .join("tiny-qwen35moe-q4_k_m.gguf"),
    )
}

fn setup_model(path: std::path::PathBuf) -> Setup {
    let model = Model::load(path).expect("the model");
    let tok = Tokenizer::from_gguf(&model.file).expect("its tokenizer");
    Setup {
        model: Arc::new(model),
        tok: Arc::new(tok),
        be: CpuBackend::new(2),
    }
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampler: SamplerParams::greedy(),
        stop: Vec::new(),
        grammar: None,
        logprobs: None,
        logit_bias: Vec::new(),
    }
}

/// What one sequence produced: its text, tokens and finish, and after each token the
/// tokens and text bytes delivered so far (the points a worker could die at).
#[derive(Debug, Default, Clone, PartialEq)]
struct Run {
    text: String,
    tokens: Vec<u32>,
    finish: Option<(FinishReason, usize)>,
    cuts: Vec<Resume>,
}

/// Adds every request at once and steps until all are done.
fn run_together(
    s: &Setup,
    config: BatchConfig,
    requests: Vec<(Vec<u32>, GenerateParams, Resume)>,
) -> (Vec<Run>, BatchStats) {
    let mut sched = Scheduler::new(Arc::clone(&s.model), Arc::clone(&s.tok), config);
    let mut runs: HashMap<u64, Run> = HashMap::new();
    let n = requests.len();
    for (i, (prompt, params, resume)) in requests.into_iter().enumerate() {
        let id = i as u64;
        let run = runs.entry(id).or_default();
        run.tokens = resume.tokens.clone();
        run.cuts.push(resume.clone());
        let first = sched
            .add(
                id,
                Request {
                    prompt,
                    params,
                    resume,
                    images: None,
                },
            )
            .expect("a valid request");
        record(&mut runs, first);
    }
    while !sched.is_idle() {
        let out = sched.step(&s.be);
        record(&mut runs, out);
    }
    let stats = sched.stats();
    (
        (0..n as u64)
            .map(|i| runs.remove(&i).unwrap_or_default())
            .collect(),
        stats,
    )
}

fn record(runs: &mut HashMap<u64, Run>, outputs: Vec<Output>) {
    for o in outputs {
        match o {
            Output::Token {
                id, text, token, ..
            } => {
                let r = runs.entry(id).or_default();
                r.text.push_str(&text);
                r.tokens.extend(token);
                let delivered = r.cuts.last().map_or(0, |c| c.text_bytes) + text.len();
                r.cuts.push(Resume {
                    tokens: r.tokens.clone(),
                    text_bytes: delivered,
                });
            }
            Output::Finished {
                id,
                finish,
                completion_tokens,
                ..
            } => runs.entry(id).or_default().finish = Some((finish, completion_tokens)),
            Output::Failed { id, reason } => panic!("sequence {id} failed: {reason}"),
        }
    }
}

/// Each request in a scheduler of its own, prompt in one chunk, no prefix cache.
fn run_alone(s: &Setup, requests: &[(Vec<u32>, GenerateParams)]) -> Vec<Run> {
    let config = BatchConfig {
        max_batch: 1,
        max_batch_tokens: 1024,
        prefix_cache: false,
        ..BatchConfig::default()
    };
    requests
        .iter()
        .map(|(p, params)| {
            run_together(
                s,
                config,
                vec![(p.clone(), params.clone(), Resume::default())],
            )
            .0
            .remove(0)
        })
        .collect()
}

fn fresh(requests: &[(Vec<u32>, GenerateParams)]) -> Vec<(Vec<u32>, GenerateParams, Resume)> {
    requests
        .iter()
        .map(|(p, g)| (p.clone(), g.clone(), Resume::default()))
        .collect()
}

fn assert_same(together: &[Run], alone: &[Run]) {
    for (i, (t, a)) in together.iter().zip(alone).enumerate() {
        assert!(
            a.tokens.len() >= 8,
            "request {i} produced too little to compare: {a:?}"
        );
        assert_eq!(
            t.tokens, a.tokens,
            "request {i}: tokens differ from its run alone"
        );
        assert_eq!(t.text, a.text, "request {i}");
        assert_eq!(t.finish, a.finish, "request {i}");
    }
}

fn prompts(s: &Setup) -> Vec<Vec<u32>> {
    let long = "Here is a long account of the history of the lighthouse keepers of the northern coast, their duties, the storms they weathered and the ships they saved over two centuries. ".repeat(3);
    [
        "The three primary colours are",
        "Write a haiku about the sea.",
        "def fibonacci(n):",
        "The capital of France is",
        long.as_str(),
        "Once upon a time, in a small village by the sea,",
        "List five fruits:",
        "Explain photosynthesis to a child in one paragraph.",
    ]
    .iter()
    .map(|p| s.tok.encode(p).expect("encode"))
    .collect()
}

#[test]
fn eight_concurrent_greedy_requests_match_each_run_alone() {
    let s = setup();
    let requests: Vec<_> = prompts(&s).into_iter().map(|p| (p, greedy(32))).collect();
    assert!(
        requests.iter().any(|(p, _)| p.len() > 64),
        "one prompt takes llama.cpp's long-prompt path when alone"
    );
    let alone = run_alone(&s, &requests);
    // Prompts in chunks of at most 40 rows, mixed into the same steps as decoding rows.
    let config = BatchConfig {
        max_batch: 8,
        max_batch_tokens: 40,
        prefix_cache: false,
        ..BatchConfig::default()
    };
    let (together, stats) = run_together(&s, config, fresh(&requests));
    assert_same(&together, &alone);
    assert!(
        stats.batch_sizes[3] > 10,
        "most steps ran all 8 sequences: {stats:?}"
    );
    assert_eq!(stats.kv_blocks_used, 0, "every block was given back");
}

#[test]
fn sequences_keep_their_own_sampling_params_in_one_batch() {
    let s = setup();
    let p = prompts(&s);
    let seeded = |t: f32, seed: u64, stop: &[&str]| GenerateParams {
        max_tokens: 40,
        sampler: SamplerParams {
            temperature: t,
            seed,
            ..SamplerParams::default()
        },
        stop: stop.iter().map(|x| x.to_string()).collect(),
        grammar: None,
        logprobs: None,
        logit_bias: Vec::new(),
    };
    let requests = vec![
        (p[5].clone(), seeded(0.9, 7, &[])),
        (p[5].clone(), seeded(1.3, 8, &[])),
        (p[1].clone(), seeded(0.7, 1, &["\n"])),
        (p[0].clone(), greedy(40)),
        (
            p[3].clone(),
            GenerateParams {
                stop: vec![".".into()],
                ..greedy(40)
            },
        ),
    ];
    let alone = run_alone(&s, &requests);
    let (together, _) = run_together(
        &s,
        BatchConfig {
            max_batch: 8,
            max_batch_tokens: 16,
            ..BatchConfig::default()
        },
        fresh(&requests),
    );
    for (i, (t, a)) in together.iter().zip(&alone).enumerate() {
        assert_eq!(
            (&t.tokens, &t.text, t.finish),
            (&a.tokens, &a.text, a.finish),
            "request {i}"
        );
    }
    assert_ne!(
        together[0].tokens, together[1].tokens,
        "different seeds and temperatures differ"
    );
}

#[test]
fn a_shared_system_prompt_is_computed_once_and_changes_nothing() {
    let s = setup();
    let system = s.tok.encode(&"You are a helpful assistant for the Northern Lighthouse Board. Answer briefly and precisely, citing the keeper's log where you can. ".repeat(4)).expect("encode");
    let questions = [
        "Who keeps the lights?",
        "When was the first lighthouse built?",
        "What is a foghorn?",
        "How far can the light be seen?",
        "What do keepers eat?",
        "Is the work lonely?",
        "What happens in a storm?",
        "Who pays for the lights?",
    ];
    let requests: Vec<_> = questions
        .iter()
        .map(|q| {
            let mut p = system.clone();
            p.extend(s.tok.encode(q).expect("encode"));
            (p, greedy(24))
        })
        .collect();
    let alone = run_alone(&s, &requests);
    let (together, stats) = run_together(
        &s,
        BatchConfig {
            max_batch: 8,
            max_batch_tokens: 512,
            ..BatchConfig::default()
        },
        fresh(&requests),
    );
    assert_same(&together, &alone);
    let shared = (system.len() / 16 * 16) as u64;
    // All eight are admitted in one step, before any block is registered; a second wave
    // finds the system prompt cached.
    let (again, stats2) = run_twice(&s, &requests);
    assert_same(&again, &alone);
    assert!(
        stats2.prefix_hit_tokens >= 8 * shared,
        "the second wave reuses the system prompt: {stats2:?} (first wave {stats:?})"
    );
}

/// Runs `requests` all together twice on one scheduler; returns the second wave's runs.
fn run_twice(s: &Setup, requests: &[(Vec<u32>, GenerateParams)]) -> (Vec<Run>, BatchStats) {
    let mut sched = Scheduler::new(
        Arc::clone(&s.model),
        Arc::clone(&s.tok),
        BatchConfig {
            max_batch: 8,
            ..BatchConfig::default()
        },
    );
    let mut runs = HashMap::new();
    for wave in 0..2u64 {
        for (i, (p, g)) in requests.iter().enumerate() {
            let first = sched
                .add(
                    wave * 100 + i as u64,
                    Request {
                        prompt: p.clone(),
                        params: g.clone(),
                        resume: Resume::default(),
                        images: None,
                    },
                )
                .expect("valid");
            record(&mut runs, first);
        }
        while !sched.is_idle() {
            let out = sched.step(&s.be);
            record(&mut runs, out);
        }
    }
    (
        (0..requests.len() as u64)
            .map(|i| runs.remove(&(100 + i)).unwrap_or_default())
            .collect(),
        sched.stats(),
    )
}

#[test]
fn a_fully_cached_prompt_copies_its_last_block_and_recomputes_one_token() {
    let s = setup();
    let mut prompt = s
        .tok
        .encode(&"The sea is calm tonight, the tide is full. ".repeat(4))
        .expect("encode");
    prompt.truncate(32);
    let requests = vec![(prompt, greedy(16))];
    let alone = run_alone(&s, &requests);
    let (again, stats) = run_twice(&s, &requests);
    assert_same(&again, &alone);
    assert_eq!(
        stats.prefix_hit_tokens, 31,
        "all but the last token came from the cache: {stats:?}"
    );
}

#[test]
fn a_hybrid_model_batches_chunks_and_preempts_exactly() {
    let s = hybrid();
    let requests: Vec<_> = prompts(&s).into_iter().map(|p| (p, greedy(32))).collect();
    let lens: Vec<usize> = requests.iter().map(|(p, _)| p.len()).collect();
    assert!(lens.iter().any(|&l| l > 150), "a long prompt: {lens:?}");
    let alone = run_alone(&s, &requests);
    // Prompts in chunks of at most 40 rows beside decoding rows, and a pool of 24 blocks
    // (384 positions) for about 550: the newest sequences are preempted and recomputed,
    // recurrent state and all.
    let config = BatchConfig {
        max_batch: 8,
        max_batch_tokens: 40,
        kv_tokens: 384,
        prefix_cache: true,
    };
    let (together, stats) = run_together(&s, config, fresh(&requests));
    assert_same(&together, &alone);
    assert!(stats.preemptions > 0, "the pool was too small: {stats:?}");
    assert!(stats.batch_sizes[3] > 0, "steps ran 8 sequences: {stats:?}");
    assert_eq!(
        stats.prefix_query_tokens, 0,
        "hybrid models keep no prefix cache: {stats:?}"
    );
    assert_eq!(stats.kv_blocks_used, 0);
}

#[test]
fn a_kv_pool_too_small_for_everyone_preempts_and_completes_every_request_exactly() {
    let s = setup();
    let requests: Vec<_> = prompts(&s)
        .into_iter()
        .filter(|p| p.len() < 20)
        .take(6)
        .map(|p| (p, greedy(48)))
        .collect();
    assert_eq!(requests.len(), 6);
    let alone = run_alone(&s, &requests);
    // Ten blocks of 16 positions; each request needs up to 67 positions (5 blocks).
    let config = BatchConfig {
        max_batch: 6,
        max_batch_tokens: 64,
        kv_tokens: 160,
        prefix_cache: true,
    };
    let (together, stats) = run_together(&s, config, fresh(&requests));
    assert_same(&together, &alone);
    assert!(stats.preemptions > 0, "the pool was too small: {stats:?}");
    assert_eq!(stats.kv_blocks_used, 0);
}

#[test]
fn a_cancelled_sequence_reports_what_it_produced_and_frees_its_blocks() {
    let s = setup();
    let p = prompts(&s);
    let mut sched = Scheduler::new(
        Arc::clone(&s.model),
        Arc::clone(&s.tok),
        BatchConfig::default(),
    );
    sched
        .add(
            1,
            Request {
                prompt: p[0].clone(),
                params: greedy(64),
                resume: Resume::default(),
                images: None,
            },
        )
        .expect("valid");
    sched
        .add(
            2,
            Request {
                prompt: p[1].clone(),
                params: greedy(8),
                resume: Resume::default(),
                images: None,
            },
        )
        .expect("valid");
    let mut produced = 0;
    for _ in 0..5 {
        produced += sched
            .step(&s.be)
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Token {
                        id: 1,
                        token: Some(_),
                        ..
                    }
                )
            })
            .count();
    }
    assert!(sched.stats().kv_blocks_used > 0);
    assert_eq!(
        sched.cancel(1),
        Some(Output::Finished {
            id: 1,
            finish: FinishReason::Cancelled,
            prompt_tokens: p[0].len(),
            completion_tokens: produced
        })
    );
    assert_eq!(sched.cancel(1), None, "gone");
    while !sched.is_idle() {
        sched.step(&s.be);
    }
    assert_eq!(sched.stats().kv_blocks_used, 0);
    let bad = sched.add(
        3,
        Request {
            prompt: vec![u32::MAX],
            params: greedy(8),
            resume: Resume::default(),
            images: None,
        },
    );
    assert!(bad.is_err(), "a token outside the vocabulary is refused");
    assert!(sched.is_idle());
}

#[test]
fn a_resumed_generation_continues_exactly_where_the_first_left_off() {
    resumes_exactly(&setup());
}

#[test]
fn a_hybrid_models_resumed_generation_continues_exactly_where_the_first_left_off() {
    resumes_exactly(&hybrid());
}

/// Another worker, given the prompt and what was delivered, continues the generation
/// (prefilling prompt and tokens, which rebuilds any recurrent state) exactly.
fn resumes_exactly(s: &Setup) {
    let prompt = s
        .tok
        .encode("Once upon a time, in a small village by the sea,")
        .expect("encode");
    let seeded = GenerateParams {
        max_tokens: 40,
        sampler: SamplerParams {
            temperature: 0.9,
            seed: 7,
            ..SamplerParams::default()
        },
        stop: vec!["\n\n".into()],
        grammar: None,
        logprobs: None,
        logit_bias: Vec::new(),
    };
    for params in [greedy(40), seeded] {
        let full = run_alone(s, &[(prompt.clone(), params.clone())]).remove(0);
        assert!(full.tokens.len() > 10, "a long enough run: {full:?}");
        let cuts = &full.cuts;
        for cut in [
            &cuts[1],
            &cuts[5],
            &cuts[cuts.len() / 2],
            &cuts[cuts.len() - 2],
        ] {
            // Another worker, busy with other sequences, continues it.
            let mut requests = vec![(prompt.clone(), params.clone(), cut.clone())];
            requests.extend(fresh(&[(prompts(s)[2].clone(), greedy(20))]));
            let rest = run_together(s, BatchConfig::default(), requests)
                .0
                .remove(0);
            let before =
                String::from_utf8_lossy(&full.text.as_bytes()[..cut.text_bytes]).into_owned();
            assert_eq!(
                before + &rest.text,
                full.text,
                "resumed after {} tokens (t={})",
                cut.tokens.len(),
                params.sampler.temperature
            );
            assert_eq!(
                rest.tokens,
                full.tokens,
                "the same tokens after {} tokens",
                cut.tokens.len()
            );
            assert_eq!(rest.finish, full.finish);
        }
    }
}
