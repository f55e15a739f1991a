//! The engine thread with the real model: streamed text equals a direct generation, a
//! cancel or a dropped receiver stops the job at once (billing only what was produced),
//! a full queue refuses work instead of waiting, and a generation resumed from any point
//! (failover) continues exactly as the undisturbed run did, greedy or seeded.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use supernet::engine::generate::{generate, FinishReason, GenerateParams, Resume};
use supernet::engine::sampler::SamplerParams;
use supernet::engine::tokenizer::Tokenizer;
use supernet::engine::{CpuBackend, Model};
use supernet::worker::engine_thread::{EngineThread, Job, JobEvent, SubmitError};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn setup() -> (Arc<Model>, Arc<Tokenizer>) {
    let model = Model::load(common::smollm2()).expect("the model");
    let tok = Tokenizer::from_gguf(&model.file).expect("its tokenizer");
    (Arc::new(model), Arc::new(tok))
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams { max_tokens, sampler: SamplerParams::greedy(), stop: Vec::new() }
}

fn job(id: &str, prompt: Vec<u32>, params: GenerateParams) -> (Job, Arc<AtomicBool>, UnboundedReceiver<JobEvent>) {
    let (tx, rx) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    (Job { id: id.into(), prompt, params, resume: Resume::default(), cancel: Arc::clone(&cancel), events: tx }, cancel, rx)
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
    let direct = generate(&model, &CpuBackend::new(2), &tok, &prompt, &greedy(24), &Resume::default(), |_, _| std::ops::ControlFlow::Continue(())).expect("generate");

    let engine = EngineThread::start(Arc::clone(&model), Arc::clone(&tok), 2, 4).expect("start");
    let (j, _cancel, mut rx) = job("a", prompt.clone(), greedy(24));
    engine.submit(j).expect("submit");
    let (text, end) = drain(&mut rx);
    assert_eq!(text, direct.text);
    assert_eq!(end, Some(JobEvent::Finished { finish: direct.finish, prompt_tokens: prompt.len(), completion_tokens: direct.token_ids.len() }));

    // Cancel after the first piece of text: the job ends at once and reports what it made.
    let (j, cancel, mut rx) = job("b", prompt.clone(), greedy(200));
    engine.submit(j).expect("submit");
    let first = rx.blocking_recv().expect("an event");
    assert!(matches!(first, JobEvent::Text { .. }), "{first:?}");
    cancel.store(true, Ordering::SeqCst);
    let (_, end) = drain(&mut rx);
    match end {
        Some(JobEvent::Finished { finish: FinishReason::Cancelled, completion_tokens, .. }) => assert!((1..10).contains(&completion_tokens), "{completion_tokens}"),
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
    let prompt = tok.encode("Count from one to one hundred:").expect("encode");
    let engine = EngineThread::start(model, tok, 1, 1).expect("start");
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
    assert!(refused >= 2, "one job runs and one waits; the rest are refused ({refused})");
    for (cancel, _) in &held {
        cancel.store(true, Ordering::SeqCst);
    }
    for (_, mut rx) in held {
        drain(&mut rx);
    }
    let s = engine.status();
    assert_eq!((s.queued.load(Ordering::SeqCst), s.running.load(Ordering::SeqCst)), (0, 0));
    assert_eq!(s.cancelled.load(Ordering::SeqCst) + s.completed.load(Ordering::SeqCst), 4 - refused);
}

/// Runs a generation, recording after each token how many tokens and text bytes the client
/// had: the points a worker could die at.
fn with_cuts(model: &Model, tok: &Tokenizer, prompt: &[u32], params: &GenerateParams, resume: &Resume) -> (String, Vec<u32>, Vec<Resume>) {
    let (mut text, mut tokens, mut cuts) = (String::new(), resume.tokens.clone(), Vec::new());
    let mut delivered = resume.text_bytes;
    generate(model, &CpuBackend::new(2), tok, prompt, params, resume, |t, id| {
        text.push_str(t);
        delivered += t.len();
        tokens.extend(id);
        cuts.push(Resume { tokens: tokens.clone(), text_bytes: delivered });
        std::ops::ControlFlow::Continue(())
    })
    .expect("generate");
    (text, tokens, cuts)
}

#[test]
fn a_resumed_generation_continues_exactly_where_the_first_left_off() {
    let (model, tok) = setup();
    let prompt = tok.encode("Once upon a time, in a small village by the sea,").expect("encode");
    let seeded = GenerateParams { max_tokens: 40, sampler: SamplerParams { temperature: 0.9, seed: 7, ..SamplerParams::default() }, stop: vec!["\n\n".into()] };
    for params in [greedy(40), seeded] {
        let (full, full_tokens, cuts) = with_cuts(&model, &tok, &prompt, &params, &Resume::default());
        assert!(full_tokens.len() > 10, "a long enough run: {full:?}");
        for cut in [&cuts[0], &cuts[5], &cuts[cuts.len() / 2], &cuts[cuts.len() - 2]] {
            let (rest, tokens, _) = with_cuts(&model, &tok, &prompt, &params, cut);
            let before = &full.as_bytes()[..cut.text_bytes];
            assert_eq!(String::from_utf8_lossy(before).into_owned() + &rest, full, "resumed after {} tokens ({:?})", cut.tokens.len(), params.sampler.temperature);
            assert_eq!(tokens, full_tokens, "the same tokens after {} tokens", cut.tokens.len());
        }
    }
}
