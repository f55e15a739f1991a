//! The coordinator, the bus and a worker with the real engine behind them, as `supernet
//! serve` runs them: a model no worker serves is refused (503 material), a worker's
//! heartbeats register it, a placed job streams its events back on the session's stream,
//! a job that finds the worker full waits in the coordinator's queue and is placed when a
//! job ends, and a cancel stops a job with the tokens produced so far.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use supernet::billing::accounts::Billing;
use supernet::bus::memory::MemoryBus;
use supernet::bus::{Ack, Bus};
use supernet::coordinator::lead::Sole;
use supernet::coordinator::placer::Settings;
use supernet::coordinator::CoordinatorActor;
use supernet::engine::batch::BatchConfig;
use supernet::engine::tokenizer::Tokenizer;
use supernet::engine::Model;
use supernet::protocol::{
    self, streams, CoordinatorCommand, JobParams, JobSpec, NodeMessage, PlaceRequest, Placement,
    Progress, QueueReason, WorkerCommand, WorkerEvent,
};
use supernet::store::embedded::RedbStore;
use supernet::worker::actor::WorkerActor;
use supernet::worker::engine_thread::EngineConfig;

fn job(id: &str, model: &str, prompt: &[u32], max_tokens: usize) -> JobSpec {
    JobSpec {
        job_id: id.into(),
        attempt: 0,
        account_id: "acct".into(),
        model: model.into(),
        prompt: prompt.to_vec(),
        params: JobParams::greedy(max_tokens),
        resume: Progress::default(),
        reply_to: streams::node("test"),
        media: None,
        images: Vec::new(),
    }
}

async fn place(bus: &MemoryBus, job: JobSpec) {
    let id = job.job_id.clone();
    let command = CoordinatorCommand::Place(Box::new(PlaceRequest::llm(job, 0, Vec::new())));
    protocol::to_coordinator(bus, "test", &id, &command)
        .await
        .expect("send");
}

/// The next message on the test's node stream, with its job id.
async fn next(bus: &MemoryBus) -> (String, NodeMessage) {
    let d = bus
        .consume(
            &streams::node("test"),
            streams::SESSION_GROUP,
            "t",
            1,
            Duration::from_secs(30),
            Ack::OnRead,
        )
        .await
        .expect("consume")
        .pop()
        .expect("a message within 30 s");
    (
        d.envelope.correlation_id.clone(),
        d.envelope.payload().expect("a node message"),
    )
}

fn placement(p: Placement) -> NodeMessage {
    NodeMessage::Placement {
        attempt: 0,
        placement: p,
    }
}

fn worker(event: WorkerEvent) -> NodeMessage {
    NodeMessage::Worker { attempt: 0, event }
}

#[actix::test]
async fn jobs_are_placed_queued_and_streamed_through_the_bus() {
    let model = Arc::new(Model::load(common::smollm2()).expect("the model"));
    let tok = Arc::new(Tokenizer::from_gguf(&model.file).expect("tokenizer"));
    let prompt = tok.encode("Once upon a time").expect("encode");
    let bus = Arc::new(MemoryBus::default());
    let data = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(RedbStore::open(data.path()).expect("the store"));
    let billing = Arc::new(Billing::new(store, Default::default()));
    let settings = Settings {
        dead_after: Duration::from_secs(3),
        max_jobs_per_account: 0,
        allow_simulated: false,
        max_queue: 8,
    };
    CoordinatorActor::new(
        "local".into(),
        bus.clone(),
        Arc::new(Sole),
        billing,
        settings,
    )
    .start();

    place(&bus, job("j0", "smol", &prompt, 4)).await;
    assert!(matches!(
        next(&bus).await,
        (j, NodeMessage::Placement { placement: Placement::Refused { busy: false, .. }, .. }) if j == "j0"
    ));

    // Room for one waiting job behind the running one; its first heartbeat registers it.
    let config = EngineConfig {
        threads: 2,
        batch: BatchConfig {
            max_batch: 1,
            ..BatchConfig::default()
        },
        max_queue: 1,
    };
    WorkerActor::new("w1", "smol", model, tok, None, config, bus.clone())
        .expect("worker")
        .start();
    tokio::time::sleep(Duration::from_millis(300)).await;

    place(&bus, job("j1", "smol", &prompt, 200)).await;
    let placed = placement(Placement::Placed {
        worker_id: "w1".into(),
    });
    let accepted = worker(WorkerEvent::Accepted {
        worker_id: "w1".into(),
    });
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(next(&bus).await);
    }
    assert!(seen.contains(&("j1".into(), placed.clone())), "{seen:?}");
    assert!(seen.contains(&("j1".into(), accepted)), "{seen:?}");
    assert!(
        matches!(next(&bus).await, (j, NodeMessage::Worker { event: WorkerEvent::Text { .. }, .. }) if j == "j1")
    );

    // j2 waits in the worker; j3 finds it full and waits in the coordinator's queue.
    place(&bus, job("j2", "smol", &prompt, 4)).await;
    place(&bus, job("j3", "smol", &prompt, 4)).await;
    let mut j2_placed = false;
    let mut j3_waits = false;
    while !(j2_placed && j3_waits) {
        match next(&bus).await {
            (j, m) if j == "j2" && m == placed => j2_placed = true,
            (j, m) if j == "j3" => {
                assert_eq!(m, placement(Placement::Waiting(QueueReason::Queued)));
                j3_waits = true;
            }
            (j, NodeMessage::Worker { .. }) if j == "j1" || j == "j2" => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    // Cancelling j1 ends it early; then j2 runs, and j3 is placed once the worker has room.
    let cancel = WorkerCommand::Cancel {
        job_id: "j1".into(),
    };
    protocol::to_worker(bus.as_ref(), "test", "w1", "j1", &cancel)
        .await
        .expect("send");
    let mut finished = Vec::new();
    let mut j3_placed = false;
    while finished.len() < 3 {
        match next(&bus).await {
            (
                j,
                NodeMessage::Worker {
                    event:
                        WorkerEvent::Finished {
                            completion_tokens, ..
                        },
                    ..
                },
            ) => finished.push((j, completion_tokens)),
            (j, m) if j == "j3" && m == placed => j3_placed = true,
            (_, NodeMessage::Worker { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(j3_placed);
    assert_eq!(finished[0].0, "j1");
    assert!(finished[0].1 < 200, "the cancel stopped j1 early");
    assert_eq!(
        finished[1..],
        [("j2".to_string(), 4), ("j3".to_string(), 4)]
    );
}
