//! The golden wire test: one fixed value of every message, encoded as the bus encodes it,
//! compared with the bytes checked into `tests/data/wire/v{VERSION}/`. A change to any
//! message fails it. To change the wire on purpose, bump [`super::VERSION`] and write the
//! new version's files with `SUPERNET_BLESS_WIRE=1 cargo test --lib golden`; the old
//! version's files then go.

use std::path::PathBuf;

use serde::Serialize;

use super::media::{Asset, MediaEvent, MediaInput, MediaKind, MediaTask};
use super::*;

fn job() -> JobSpec {
    JobSpec {
        job_id: "job-1".into(),
        attempt: 2,
        account_id: "acct-1".into(),
        model: "SmolLM2".into(),
        prompt: vec![1, 2, 300, 70_000],
        params: JobParams {
            max_tokens: 64,
            sampler: Sampling {
                temperature: 0.5,
                top_k: 40,
                top_p: 0.9,
                min_p: 0.05,
                repetition_penalty: 1.1,
                frequency_penalty: 0.2,
                presence_penalty: -0.3,
                penalty_last_n: 64,
                seed: 42,
            },
            stop: vec!["\n\n".into()],
            grammar: Some("start: \"a\"".into()),
            logprobs: Some(2),
            logit_bias: vec![(7, -100.0)],
        },
        resume: Progress {
            tokens: vec![5, 6],
            text_bytes: 9,
        },
        reply_to: streams::node("front-1.0"),
        media: None,
        images: vec![JobImage {
            blob: super::images::key("job-1", 0),
            runs: vec![ImageRunSpec {
                at: 2,
                nx: 3,
                ny: 1,
            }],
        }],
    }
}

fn media_job() -> JobSpec {
    JobSpec {
        model: "text_to_image".into(),
        prompt: Vec::new(),
        media: Some(MediaTask {
            tool: "generate_image".into(),
            arguments: r#"{"prompt":"a neon alley"}"#.into(),
            inputs: vec![MediaInput {
                role: "source_image".into(),
                asset: asset(),
            }],
            idempotency_key: "job-1.media".into(),
        }),
        images: Vec::new(),
        ..job()
    }
}

fn asset() -> Asset {
    Asset {
        id: "a-1".into(),
        account_id: "acct-1".into(),
        kind: MediaKind::Image,
        mime: "image/png".into(),
        size_bytes: 1234,
        width: Some(64),
        height: Some(48),
        duration_ms: None,
    }
}

fn info() -> WorkerInfo {
    WorkerInfo {
        worker_id: "w-1".into(),
        kind: WorkerKind::Llm,
        model_id: "SmolLM2".into(),
        context_length: 8192,
        max_batch: 8,
        kv_capacity: 65_536,
        simulated: false,
        pipelines: Vec::new(),
    }
}

fn load() -> WorkerLoad {
    WorkerLoad {
        queued: 1,
        running: 2,
        completed: 3,
        cancelled: 4,
        capacity: 72,
        draining: false,
        kv_used: 512,
        tokens_per_s: 123.5,
        batch: BatchFigures {
            running: 2,
            waiting: 1,
            kv_blocks_used: 32,
            kv_blocks_total: 4096,
            prefix_query_tokens: 100,
            prefix_hit_tokens: 64,
            preemptions: 1,
            steps: 10,
            batch_sizes: vec![1, 2, 3, 4, 0, 0, 0, 0],
            batch_sum: 30,
            tokens_generated: 40,
            images_encoded: 2,
            images_cached: 1,
        },
        jobs: vec![job().job_ref()],
    }
}

/// Every message, by name.
fn messages() -> Vec<(&'static str, Vec<u8>)> {
    fn enc<T: Serialize>(name: &'static str, v: &T) -> (&'static str, Vec<u8>) {
        let env = crate::bus::Envelope::new("golden", "node", "job-1", v).expect("encode");
        (name, env.payload)
    }
    let worker = |event| NodeMessage::Worker { attempt: 1, event };
    let placement = |placement| NodeMessage::Placement {
        attempt: 1,
        placement,
    };
    vec![
        enc("command-run", &WorkerCommand::Run(Box::new(job()))),
        enc(
            "command-cancel",
            &WorkerCommand::Cancel {
                job_id: "job-1".into(),
            },
        ),
        enc(
            "node-accepted",
            &worker(WorkerEvent::Accepted {
                worker_id: "w-1".into(),
            }),
        ),
        enc(
            "node-rejected",
            &worker(WorkerEvent::Rejected {
                busy: true,
                reason: "full".into(),
            }),
        ),
        enc(
            "node-text",
            &worker(WorkerEvent::Text {
                text: "Hi".into(),
                tokens: vec![9, 10],
                logprobs: vec![Logprob {
                    token: 9,
                    logprob: -0.25,
                    top: vec![(9, -0.25), (11, -2.0)],
                }],
            }),
        ),
        enc(
            "node-finished",
            &worker(WorkerEvent::Finished {
                finish: Finish::Length,
                prompt_tokens: 4,
                completion_tokens: 64,
            }),
        ),
        enc(
            "node-failed",
            &worker(WorkerEvent::Failed("grammar".into())),
        ),
        enc(
            "command-run-media",
            &WorkerCommand::Run(Box::new(media_job())),
        ),
        enc(
            "node-media-progress",
            &worker(WorkerEvent::Media(MediaEvent::Progress { fraction: 0.5 })),
        ),
        enc(
            "node-media-done",
            &worker(WorkerEvent::Media(MediaEvent::Done {
                assets: vec![asset()],
            })),
        ),
        enc(
            "node-media-failed",
            &worker(WorkerEvent::Media(MediaEvent::Failed {
                error_type: "MODEL_UNAVAILABLE".into(),
                message: "the backend restarted".into(),
                retryable: true,
            })),
        ),
        enc(
            "node-placed",
            &placement(Placement::Placed {
                worker_id: "w-1".into(),
            }),
        ),
        enc(
            "node-waiting",
            &placement(Placement::Waiting(QueueReason::ConcurrencyLimit)),
        ),
        enc(
            "node-refused",
            &placement(Placement::Refused {
                busy: true,
                reason: "the queue is full".into(),
            }),
        ),
        enc(
            "node-lost",
            &NodeMessage::Lost {
                attempt: 1,
                worker_id: "w-1".into(),
            },
        ),
        enc(
            "coordinator-place",
            &CoordinatorCommand::Place(Box::new(PlaceRequest::llm(job(), 3, vec!["w-0".into()]))),
        ),
        enc(
            "coordinator-withdraw",
            &CoordinatorCommand::Withdraw {
                job_id: "job-1".into(),
            },
        ),
        enc(
            "heartbeat",
            &Heartbeat {
                info: info(),
                load: load(),
                received: vec!["job-1".into()],
                leaving: false,
                sent_at_ms: 1_800_000_000_000,
            },
        ),
        enc(
            "pool-view",
            &PoolView {
                workers: vec![(info(), load())],
            },
        ),
        enc(
            "model-card",
            &ModelCard {
                model_id: "SmolLM2".into(),
                architecture: "llama".into(),
                context_length: 8192,
                gguf_metadata: vec![b'G', b'G', b'U', b'F', 3, 0, 0, 0],
                mmproj_metadata: Some(vec![b'G', b'G', b'U', b'F']),
            },
        ),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/wire/v{VERSION}"))
}

#[test]
fn every_message_encodes_to_its_checked_in_bytes() {
    let dir = dir();
    if std::env::var_os("SUPERNET_BLESS_WIRE").is_some() {
        std::fs::create_dir_all(&dir).expect("the golden directory");
        for (name, bytes) in messages() {
            std::fs::write(dir.join(format!("{name}.bin")), bytes).expect("write");
        }
    }
    for (name, bytes) in messages() {
        let path = dir.join(format!("{name}.bin"));
        let golden = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}. A new message or a new protocol version needs its golden bytes \
                 (SUPERNET_BLESS_WIRE=1)",
                path.display()
            )
        });
        assert!(
            golden == bytes,
            "`{name}` no longer encodes to {}: the wire changed. Bump the protocol version \
             and bless the new bytes, or undo the change",
            path.display()
        );
    }
}

#[test]
fn every_message_decodes_from_its_bytes() {
    let env = |bytes: Vec<u8>| crate::bus::Envelope {
        version: VERSION,
        kind: "golden".into(),
        sender: "node".into(),
        correlation_id: "job-1".into(),
        traceparent: None,
        payload: bytes,
    };
    let m = messages();
    let bytes = |name: &str| {
        env(m
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a message")
            .1
            .clone())
    };
    assert_eq!(
        bytes("command-run")
            .payload::<WorkerCommand>()
            .expect("decode"),
        WorkerCommand::Run(Box::new(job()))
    );
    assert_eq!(
        bytes("heartbeat")
            .payload::<Heartbeat>()
            .expect("decode")
            .load,
        load()
    );
    assert_eq!(
        bytes("pool-view")
            .payload::<PoolView>()
            .expect("decode")
            .workers,
        vec![(info(), load())]
    );
}

#[test]
fn wire_params_carry_every_engine_parameter_and_back() {
    let params = JobParams::from(&crate::engine::generate::GenerateParams::from(job().params));
    assert_eq!(params, job().params);
}
