//! Placement and the worker's bus inbox, with the real engine behind them: an unknown model
//! is refused (503 material), a full worker is refused at once (429 material), a placed job
//! streams its events back on the session's stream, and a cancel stops it with the tokens
//! produced so far.

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use supernet::bus::memory::MemoryBus;
use supernet::bus::{streams, Ack, Bus};
use supernet::coordinator::{loads, CoordinatorActor, Place, PlaceError, Register, Workers};
use supernet::engine::batch::BatchConfig;
use supernet::engine::generate::{GenerateParams, Resume};
use supernet::engine::sampler::SamplerParams;
use supernet::engine::tokenizer::Tokenizer;
use supernet::engine::Model;
use supernet::worker::actor::{send_command, WorkerActor};
use supernet::worker::engine_thread::{EngineConfig, JobEvent};
use supernet::worker::protocol::{JobSpec, NodeMessage, WorkerCommand, WorkerEvent};

fn run(id: &str, model: &str, prompt: &[u32], max_tokens: usize) -> WorkerCommand {
    let params = GenerateParams {
        max_tokens,
        sampler: SamplerParams::greedy(),
        stop: Vec::new(),
        grammar: None,
        logprobs: None,
        logit_bias: Vec::new(),
    };
    WorkerCommand::Run(Box::new(JobSpec {
        job_id: id.into(),
        attempt: 0,
        account_id: "acct".into(),
        model: model.into(),
        prompt: prompt.to_vec(),
        params,
        resume: Resume::default(),
        reply_to: streams::node("test"),
    }))
}

/// The next event on the test's node stream, with its job id.
async fn next_event(bus: &MemoryBus) -> (String, WorkerEvent) {
    let stream = streams::node("test");
    let d = bus
        .consume(
            &stream,
            "sessions",
            "t",
            1,
            Duration::from_secs(30),
            Ack::OnRead,
        )
        .await
        .expect("consume")
        .pop()
        .expect("an event within 30 s");
    bus.ack(&stream, "sessions", std::slice::from_ref(&d.id))
        .await
        .expect("ack");
    match d.envelope.payload().expect("a node message") {
        NodeMessage::Worker { event, .. } => (d.envelope.correlation_id.clone(), event),
        other => panic!("expected a worker event, got {other:?}"),
    }
}

#[actix::test]
async fn jobs_go_to_a_worker_of_their_model_or_are_refused_at_once() {
    let model = Arc::new(Model::load(common::smollm2()).expect("the model"));
    let tok = Arc::new(Tokenizer::from_gguf(&model.file).expect("tokenizer"));
    let prompt = tok.encode("Once upon a time").expect("encode");
    let bus = Arc::new(MemoryBus::default());
    let coord = CoordinatorActor::default().start();

    let r = coord
        .send(Place {
            model: "smol".into(),
        })
        .await
        .expect("mailbox");
    assert_eq!(r, Err(PlaceError::NoWorker("smol".into())));

    // Room for one waiting job behind the running one.
    let config = EngineConfig {
        threads: 2,
        batch: BatchConfig {
            max_batch: 1,
            ..BatchConfig::default()
        },
        max_queue: 1,
    };
    let worker = WorkerActor::new(
        "w1",
        "smol",
        Arc::clone(&model),
        Arc::clone(&tok),
        config,
        bus.clone(),
    )
    .expect("worker");
    let info = worker.info.clone();
    let worker = worker.start();
    coord
        .send(Register { info, addr: worker })
        .await
        .expect("mailbox");

    // A job for another model is refused by the worker itself.
    send_command(
        bus.as_ref(),
        "test",
        "w1",
        "j0",
        &run("j0", "other", &prompt, 4),
    )
    .await
    .expect("send");
    assert!(
        matches!(next_event(&bus).await, (j, WorkerEvent::Rejected { busy: false, .. }) if j == "j0")
    );

    assert_eq!(
        coord
            .send(Place {
                model: "smol".into()
            })
            .await
            .expect("mailbox"),
        Ok("w1".to_string())
    );
    send_command(
        bus.as_ref(),
        "test",
        "w1",
        "j1",
        &run("j1", "smol", &prompt, 200),
    )
    .await
    .expect("send");
    assert_eq!(
        next_event(&bus).await,
        (
            "j1".into(),
            WorkerEvent::Accepted {
                worker_id: "w1".into()
            }
        )
    );
    assert!(
        matches!(next_event(&bus).await, (j, WorkerEvent::Job(JobEvent::Text { .. })) if j == "j1")
    );

    // j1 runs (it has streamed), so j2 waits and a third finds no room.
    assert_eq!(
        coord
            .send(Place {
                model: "smol".into()
            })
            .await
            .expect("mailbox"),
        Ok("w1".to_string())
    );
    send_command(
        bus.as_ref(),
        "test",
        "w1",
        "j2",
        &run("j2", "smol", &prompt, 4),
    )
    .await
    .expect("send");
    let l = loop {
        let l = loads(&coord.send(Workers).await.expect("mailbox")).await;
        if l[0].2.queued == 1 {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!((l.len(), l[0].2.running, l[0].2.capacity), (1, 1, 2));
    assert_eq!(
        coord
            .send(Place {
                model: "smol".into()
            })
            .await
            .expect("mailbox"),
        Err(PlaceError::Busy("smol".into()))
    );

    send_command(
        bus.as_ref(),
        "test",
        "w1",
        "j1",
        &WorkerCommand::Cancel {
            job_id: "j1".into(),
        },
    )
    .await
    .expect("send");
    let mut finished = Vec::new();
    while finished.len() < 2 {
        match next_event(&bus).await {
            (
                j,
                WorkerEvent::Job(JobEvent::Finished {
                    completion_tokens, ..
                }),
            ) => finished.push((j, completion_tokens)),
            (_, WorkerEvent::Job(JobEvent::Text { .. }) | WorkerEvent::Accepted { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(finished[0].0, "j1");
    assert!(finished[0].1 < 200, "the cancel stopped j1 early");
    assert_eq!(finished[1], ("j2".to_string(), 4));
}
