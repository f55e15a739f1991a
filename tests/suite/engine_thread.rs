//! The engine thread with the real model: streamed text equals a direct generation, a
//! cancel or a dropped receiver stops the job at once (billing only what was produced),
//! and a full engine refuses work instead of waiting. (Resumed generations: `batch.rs`.)

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use supernet::engine::batch::BatchConfig;
use supernet::engine::generate::{generate, FinishReason, GenerateParams, Resume};
use supernet::engine::sampler::SamplerParams;
use supernet::engine::tokenizer::Tokenizer;
use supernet::engine::{CpuBackend, Model};
use supernet::worker::engine_thread::{
    EngineConfig, EngineThread, Job, JobEvent, JobRunner, SubmitError,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn setup() -> (Arc<Model>, Arc<Tokenizer>) {
    let model = Model::load(common::smollm2()).expect("the model");
    let tok = Tokenizer::from_gguf(&model.file).expect("its tokenizer");
    (Arc::new(model), Arc::new(tok))
}

fn config(threads: usize, max_queue: usize) -> EngineConfig {
    EngineConfig {
        threads,
        batch: BatchConfig::default(),
        max_queue,
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

fn job(
    id: &str,
    prompt: Vec<u32>,
    params: GenerateParams,
) -> (Job, Arc<AtomicBool>, UnboundedReceiver<JobEvent>) {
    let (tx, rx) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    (
        Job {
            id: id.into(),
            prompt,
            params,
            resume: Resume::default(),
            images: Vec::new(),
            cancel: Arc::clone(&cancel),
            events: tx,
        },
        cancel,
        rx,
    )
}

/// Events until `Finished` (or the channel closes): the text and the finish event.
fn drain(rx: &mut UnboundedReceiver<JobEvent>) -> (String, Option<JobEvent>) {
    let mut text = String::new();
    while let Some(e) = rx.blocking_recv() {
        match e {
            JobEvent::Text { text: t, .. } => text.push_str(&t),
            other => return (text, Some(other)),
        }
    }
    (text, None)
}

#[test]
fn streams_what_a_direct_generation_produces_and_stops_on_cancel() {
    let (model, tok) = setup();
    let prompt = tok.encode("The three primary colours are").expect("encode");
    // A short prompt: llama.cpp's own arithmetic and the batch-invariant one are the same.
    let direct = generate(
        &model,
        &CpuBackend::new(2),
        &tok,
        &prompt,
        &greedy(24),
        |_, _| std::ops::ControlFlow::Continue(()),
    )
    .expect("generate");

    let engine = EngineThread::start(Arc::clone(&model), Arc::clone(&tok), None, config(2, 4))
        .expect("start");
    let (j, _cancel, mut rx) = job("a", prompt.clone(), greedy(24));
    engine.submit(j).expect("submit");
    let (text, end) = drain(&mut rx);
    assert_eq!(text, direct.text);
    assert_eq!(
        end,
        Some(JobEvent::Finished {
            finish: direct.finish,
            prompt_tokens: prompt.len(),
            completion_tokens: direct.token_ids.len()
        })
    );

    // Cancel after the first piece of text: the job ends at once and reports what it made.
    let (j, cancel, mut rx) = job("b", prompt.clone(), greedy(200));
    engine.submit(j).expect("submit");
    let first = rx.blocking_recv().expect("an event");
    assert!(matches!(first, JobEvent::Text { .. }), "{first:?}");
    cancel.store(true, Ordering::SeqCst);
    let (_, end) = drain(&mut rx);
    match end {
        Some(JobEvent::Finished {
            finish: FinishReason::Cancelled,
            completion_tokens,
            ..
        }) => assert!((1..10).contains(&completion_tokens), "{completion_tokens}"),
        other => panic!("expected a cancelled finish, got {other:?}"),
    }

    // A dropped receiver (a client that went away) cancels too.
    let (j, _cancel, rx) = job("c", prompt.clone(), greedy(200));
    drop(rx);
    engine.submit(j).expect("submit");
    drop(engine); // finishes the queue, then joins the thread
}

#[test]
fn a_full_queue_refuses_instead_of_waiting() {
    let (model, tok) = setup();
    let prompt = tok
        .encode("Count from one to one hundred:")
        .expect("encode");
    let engine = EngineThread::start(
        model,
        tok,
        None,
        EngineConfig {
            batch: BatchConfig {
                max_batch: 1,
                ..BatchConfig::default()
            },
            ..config(1, 1)
        },
    )
    .expect("start");
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..4 {
        let (j, cancel, rx) = job(&format!("q{i}"), prompt.clone(), greedy(64));
        match engine.submit(j) {
            Ok(()) => held.push((cancel, rx)),
            Err(r) if r.reason == SubmitError::QueueFull => refused += 1,
            Err(r) => panic!("{r}"),
        }
    }
    assert_eq!(engine.capacity(), 2);
    assert!(
        refused >= 2,
        "one job runs and one waits; the rest are refused ({refused})"
    );
    for (cancel, _) in &held {
        cancel.store(true, Ordering::SeqCst);
    }
    for (_, mut rx) in held {
        drain(&mut rx);
    }
    let s = engine.status();
    assert_eq!(
        (s.queued(), s.running(), s.batch().kv_blocks_used),
        (0, 0, 0)
    );
    assert_eq!(s.cancelled() + s.completed(), 4 - refused);
}
