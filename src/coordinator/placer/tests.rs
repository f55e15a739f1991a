//! The placement rules, one at a time, with made-up heartbeats and a made-up clock.

use super::*;
use crate::protocol::{JobParams, Progress, Sampling, WorkerKind};

const MODEL: &str = "m";

fn settings() -> Settings {
    Settings {
        dead_after: Duration::from_secs(3),
        max_jobs_per_account: 0,
        allow_simulated: false,
        max_queue: 100,
    }
}

fn info(id: &str) -> WorkerInfo {
    WorkerInfo {
        worker_id: id.into(),
        kind: WorkerKind::Llm,
        model_id: MODEL.into(),
        context_length: 2048,
        max_batch: 4,
        kv_capacity: 1000,
        simulated: false,
        pipelines: Vec::new(),
    }
}

fn load(busy: u64, capacity: u64) -> WorkerLoad {
    WorkerLoad {
        running: busy,
        capacity,
        ..WorkerLoad::default()
    }
}

fn beat(info: WorkerInfo, load: WorkerLoad) -> Event<u32> {
    Event::Heartbeat {
        beat: Heartbeat {
            info,
            load,
            received: Vec::new(),
            leaving: false,
            sent_at_ms: 0,
        },
        age: Duration::ZERO,
    }
}

fn job(id: &str, account: &str, attempt: u32) -> JobSpec {
    JobSpec {
        job_id: id.into(),
        attempt,
        account_id: account.into(),
        model: MODEL.into(),
        prompt: vec![1, 2, 3],
        params: JobParams {
            max_tokens: 8,
            sampler: Sampling {
                temperature: 0.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                repetition_penalty: 1.0,
                frequency_penalty: 0.0,
                presence_penalty: 0.0,
                penalty_last_n: 64,
                seed: 0,
            },
            stop: Vec::new(),
            grammar: None,
            logprobs: None,
            logit_bias: Vec::new(),
        },
        resume: Progress::default(),
        media: None,
        images: Vec::new(),
        reply_to: "node".into(),
    }
}

fn request(ticket: u32, job: JobSpec) -> Event<u32> {
    Event::Request {
        ticket,
        request: PlaceRequest::llm(job, 0, Vec::new()),
    }
}

/// The worker each ticket was placed on.
fn placed(actions: &[Action<u32>]) -> Vec<(u32, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Place {
                ticket, worker_id, ..
            } => Some((*ticket, worker_id.clone())),
            _ => None,
        })
        .collect()
}

struct Clock(Instant);

impl Clock {
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn pool(workers: &[(&str, u64, u64)]) -> (Placer<u32>, Clock) {
    let clock = Clock(Instant::now());
    let mut p = Placer::new(settings());
    for &(id, busy, capacity) in workers {
        p.handle(beat(info(id), load(busy, capacity)), clock.at(0));
    }
    (p, clock)
}

#[test]
fn the_least_loaded_worker_gets_the_job() {
    let (mut p, c) = pool(&[("a", 2, 4), ("b", 1, 4), ("c", 3, 4)]);
    let a = p.handle(request(1, job("j1", "x", 0)), c.at(1));
    assert_eq!(placed(&a), [(1, "b".to_string())]);
}

#[test]
fn the_kv_share_breaks_a_tie_of_jobs() {
    let (mut p, c) = pool(&[]);
    let full = WorkerLoad {
        kv_used: 900,
        ..load(1, 4)
    };
    let light = WorkerLoad {
        kv_used: 100,
        ..load(1, 4)
    };
    p.handle(beat(info("a"), full), c.at(0));
    p.handle(beat(info("b"), light), c.at(0));
    assert_eq!(
        placed(&p.handle(request(1, job("j1", "x", 0)), c.at(1))),
        [(1, "b".into())]
    );
}

#[test]
fn a_prefix_stays_on_its_warm_worker_while_it_is_at_most_one_job_busier() {
    let (mut p, c) = pool(&[("a", 0, 8), ("b", 0, 8)]);
    let first = placed(&p.handle(request(1, job("j1", "x", 0)), c.at(1)));
    let warm = first[0].1.clone();
    // The warm worker now has one job more than the other: the same prefix still goes there.
    let second = placed(&p.handle(request(2, job("j2", "y", 0)), c.at(2)));
    assert_eq!(second[0].1, warm);
    // Two more: the prefix leaves for the idle worker.
    let third = placed(&p.handle(request(3, job("j3", "z", 0)), c.at(3)));
    assert_ne!(third[0].1, warm);
}

#[test]
fn a_failed_over_job_avoids_the_workers_that_lost_it() {
    let (mut p, c) = pool(&[("a", 0, 4), ("b", 3, 4)]);
    let a = p.handle(
        Event::Request {
            ticket: 1,
            request: PlaceRequest::llm(job("j1", "x", 1), 0, vec!["a".into()]),
        },
        c.at(1),
    );
    assert_eq!(placed(&a), [(1, "b".into())]);
}

#[test]
fn a_draining_worker_gets_no_job_and_a_model_with_none_else_is_refused() {
    let (mut p, c) = pool(&[]);
    let draining = WorkerLoad {
        draining: true,
        ..load(0, 4)
    };
    p.handle(beat(info("a"), draining), c.at(0));
    let a = p.handle(request(1, job("j1", "x", 0)), c.at(1));
    assert!(
        matches!(
            &a[..],
            [Action::Refuse {
                ticket: 1,
                busy: false,
                ..
            }]
        ),
        "{a:?}"
    );
}

#[test]
fn a_silent_worker_is_declared_dead_and_its_jobs_reported_lost() {
    let (mut p, c) = pool(&[("a", 0, 4)]);
    p.handle(request(1, job("j1", "x", 0)), c.at(1));
    assert!(p.handle(Event::Tick, c.at(2_000)).is_empty());
    let a = p.handle(Event::Tick, c.at(3_500));
    assert_eq!(
        a,
        [Action::Dead {
            worker_id: "a".into(),
            jobs: vec![job("j1", "x", 0).job_ref()],
        }]
    );
    assert!(p.pool().is_empty());
}

#[test]
fn silence_while_the_bus_fails_is_not_a_workers_fault() {
    let (mut p, c) = pool(&[("a", 0, 4)]);
    p.handle(Event::Trouble, c.at(2_000));
    assert!(p.handle(Event::Tick, c.at(3_500)).is_empty());
    assert_eq!(p.pool().len(), 1);
    assert_eq!(p.handle(Event::Tick, c.at(5_500)).len(), 1);
    assert!(
        p.pool().is_empty(),
        "dead after dead_after past the trouble"
    );
}

#[test]
fn a_stale_heartbeat_is_ignored() {
    let (mut p, c) = pool(&[]);
    let Event::Heartbeat { beat, .. } = beat(info("a"), load(0, 4)) else {
        unreachable!()
    };
    p.handle(
        Event::Heartbeat {
            beat,
            age: Duration::from_secs(10),
        },
        c.at(0),
    );
    assert!(p.pool().is_empty());
}

#[test]
fn a_full_pool_queues_and_places_in_arrival_order_as_room_frees() {
    let (mut p, c) = pool(&[("a", 1, 1)]);
    for t in 1..=3 {
        let a = p.handle(request(t, job(&format!("j{t}"), "x", 0)), c.at(t.into()));
        assert!(
            matches!(&a[..], [Action::Wait { ticket, reason: QueueReason::Queued, .. }] if *ticket == t),
            "{a:?}"
        );
    }
    assert_eq!(p.queue_len(), 3);
    for t in 1..=3 {
        let a = p.handle(beat(info("a"), load(0, 1)), c.at(10 + u64::from(t)));
        assert_eq!(placed(&a), [(t, "a".into())]);
        // The placement counts until the worker's heartbeat shows the job.
        assert!(placed(&p.handle(Event::Tick, c.at(10 + u64::from(t)))).is_empty());
        let mut shows = load(1, 1);
        shows.jobs = vec![job(&format!("j{t}"), "x", 0).job_ref()];
        p.handle(beat(info("a"), shows), c.at(10 + u64::from(t)));
    }
    assert_eq!(p.queue_len(), 0);
}

#[test]
fn a_waiting_job_is_told_once_per_reason() {
    let (mut p, c) = pool(&[("a", 1, 1)]);
    assert_eq!(p.handle(request(1, job("j1", "x", 0)), c.at(1)).len(), 1);
    assert!(p.handle(Event::Tick, c.at(2)).is_empty());
    assert!(p.handle(beat(info("a"), load(1, 1)), c.at(3)).is_empty());
}

#[test]
fn a_higher_tier_is_placed_first() {
    let (mut p, c) = pool(&[("a", 1, 1)]);
    p.handle(request(1, job("low", "x", 0)), c.at(1));
    p.handle(
        Event::Request {
            ticket: 2,
            request: PlaceRequest::llm(job("high", "y", 0), 5, Vec::new()),
        },
        c.at(2),
    );
    let a = p.handle(beat(info("a"), load(0, 1)), c.at(3));
    assert_eq!(placed(&a), [(2, "a".into())]);
}

#[test]
fn the_account_with_fewer_jobs_in_flight_goes_first() {
    let (mut p, c) = pool(&[]);
    let mut busy = load(1, 1);
    busy.jobs = vec![job("running", "heavy", 0).job_ref()];
    p.handle(beat(info("a"), busy), c.at(0));
    p.handle(request(1, job("h2", "heavy", 0)), c.at(1));
    p.handle(request(2, job("l1", "light", 0)), c.at(2));
    let mut other = load(0, 1);
    other.jobs = Vec::new();
    p.handle(beat(info("b"), load(1, 1)), c.at(3));
    // One slot frees on `a` while `heavy` still has a job running on `b`.
    let mut b_busy = load(1, 1);
    b_busy.jobs = vec![job("running", "heavy", 0).job_ref()];
    p.handle(beat(info("b"), b_busy), c.at(4));
    let a = p.handle(beat(info("a"), other), c.at(5));
    assert_eq!(
        placed(&a),
        [(2, "a".into())],
        "light arrived later but has none in flight"
    );
}

#[test]
fn an_account_at_its_concurrency_limit_waits() {
    let (mut p, c) = pool(&[("a", 0, 8)]);
    let mut s = settings();
    s.max_jobs_per_account = 1;
    p.settings = s;
    assert_eq!(
        placed(&p.handle(request(1, job("j1", "x", 0)), c.at(1))).len(),
        1
    );
    let a = p.handle(request(2, job("j2", "x", 0)), c.at(2));
    assert!(
        matches!(
            &a[..],
            [Action::Wait {
                reason: QueueReason::ConcurrencyLimit,
                ..
            }]
        ),
        "{a:?}"
    );
    assert_eq!(
        placed(&p.handle(request(3, job("k1", "y", 0)), c.at(3))).len(),
        1
    );
}

#[test]
fn beyond_the_queue_bound_a_job_is_refused_as_busy() {
    let (mut p, c) = pool(&[("a", 1, 1)]);
    p.settings.max_queue = 2;
    p.handle(request(1, job("j1", "x", 0)), c.at(1));
    p.handle(request(2, job("j2", "x", 0)), c.at(2));
    let a = p.handle(request(3, job("j3", "x", 0)), c.at(3));
    assert!(
        matches!(
            &a[..],
            [Action::Refuse {
                ticket: 3,
                busy: true,
                ..
            }]
        ),
        "{a:?}"
    );
    assert_eq!(p.queue_len(), 2);
}

#[test]
fn a_just_placed_job_counts_until_its_worker_shows_it_or_the_grace_ends() {
    let (mut p, c) = pool(&[("a", 0, 1)]);
    assert_eq!(
        placed(&p.handle(request(1, job("j1", "x", 0)), c.at(1))).len(),
        1
    );
    // The worker's next heartbeat was sent before the job reached it: still full.
    assert!(placed(&p.handle(request(2, job("j2", "x", 0)), c.at(2))).is_empty());
    p.handle(beat(info("a"), load(0, 1)), c.at(100));
    assert!(
        placed(&p.handle(Event::Tick, c.at(101))).is_empty(),
        "within the grace"
    );
    let a = p.handle(beat(info("a"), load(0, 1)), c.at(2_100));
    assert_eq!(placed(&a), [(2, "a".into())], "the grace ran out");
}

#[test]
fn a_received_job_frees_its_slot_even_if_it_already_ended() {
    let (mut p, c) = pool(&[("a", 0, 1)]);
    p.handle(request(1, job("j1", "x", 0)), c.at(1));
    p.handle(request(2, job("j2", "x", 0)), c.at(2));
    let a = p.handle(
        Event::Heartbeat {
            beat: Heartbeat {
                info: info("a"),
                load: load(0, 1),
                received: vec!["j1".into()],
                leaving: false,
                sent_at_ms: 0,
            },
            age: Duration::ZERO,
        },
        c.at(3),
    );
    assert_eq!(placed(&a), [(2, "a".into())]);
}

#[test]
fn simulated_workers_get_nothing_unless_allowed() {
    let (mut p, c) = pool(&[]);
    let sim = WorkerInfo {
        simulated: true,
        ..info("sim")
    };
    p.handle(beat(sim.clone(), load(0, 4)), c.at(0));
    assert!(p.pool().is_empty());
    assert!(matches!(
        &p.handle(request(1, job("j1", "x", 0)), c.at(1))[..],
        [Action::Refuse { busy: false, .. }]
    ));
    p.settings.allow_simulated = true;
    p.handle(beat(sim, load(0, 4)), c.at(2));
    assert_eq!(
        placed(&p.handle(request(2, job("j2", "x", 0)), c.at(3))),
        [(2, "sim".into())]
    );
}

#[test]
fn a_job_goes_only_to_a_worker_of_its_kind() {
    let (mut p, c) = pool(&[]);
    let media = WorkerInfo {
        kind: WorkerKind::Media,
        ..info("media")
    };
    p.handle(beat(media, load(0, 4)), c.at(0));
    assert!(matches!(
        &p.handle(request(1, job("j1", "x", 0)), c.at(1))[..],
        [Action::Refuse { busy: false, .. }]
    ));
    p.handle(beat(info("llm"), load(3, 4)), c.at(2));
    assert_eq!(
        placed(&p.handle(request(2, job("j2", "x", 0)), c.at(3))),
        [(2, "llm".into())]
    );
    assert_eq!(p.pool()[0].0.kind, WorkerKind::Llm);
}

#[test]
fn a_media_job_goes_to_a_media_worker_that_runs_its_pipeline() {
    let (mut p, c) = pool(&[]);
    let media = |id: &str, pipelines: &[&str]| WorkerInfo {
        kind: WorkerKind::Media,
        model_id: "media".into(),
        pipelines: pipelines.iter().map(|s| s.to_string()).collect(),
        ..info(id)
    };
    p.handle(beat(media("audio", &["music"]), load(0, 4)), c.at(0));
    p.handle(
        beat(media("images", &["text_to_image"]), load(2, 4)),
        c.at(0),
    );
    let image = |id: &str| {
        let mut request = PlaceRequest::llm(job(id, "x", 0), 0, Vec::new());
        request.kind = WorkerKind::Media;
        request.job.model = "text_to_image".into();
        request
    };
    let a = p.handle(
        Event::Request {
            ticket: 1,
            request: image("j1"),
        },
        c.at(1),
    );
    assert_eq!(placed(&a), [(1, "images".into())]);
    // A pipeline nobody runs is refused like a model nobody serves.
    let mut video = image("j2");
    video.job.model = "text_to_video".into();
    let a = p.handle(
        Event::Request {
            ticket: 2,
            request: video,
        },
        c.at(2),
    );
    assert!(matches!(&a[..], [Action::Refuse { busy: false, .. }]));
}

#[test]
fn a_worker_leaving_while_jobs_wait_refuses_first_attempts_and_keeps_moved_jobs_waiting() {
    let (mut p, c) = pool(&[("a", 1, 1)]);
    p.handle(request(1, job("new", "x", 0)), c.at(1));
    p.handle(request(2, job("moved", "x", 1)), c.at(2));
    let a = p.handle(
        Event::Heartbeat {
            beat: Heartbeat {
                info: info("a"),
                load: load(0, 1),
                received: Vec::new(),
                leaving: true,
                sent_at_ms: 0,
            },
            age: Duration::ZERO,
        },
        c.at(3),
    );
    assert!(
        a.iter().any(|a| matches!(
            a,
            Action::Refuse {
                ticket: 1,
                busy: false,
                ..
            }
        )),
        "{a:?}"
    );
    assert!(
        a.iter().any(|a| matches!(
            a,
            Action::Wait {
                ticket: 2,
                reason: QueueReason::NoWorkers,
                ..
            }
        )),
        "{a:?}"
    );
    assert_eq!(p.queue_len(), 1);
    let a = p.handle(beat(info("b"), load(0, 1)), c.at(4));
    assert_eq!(placed(&a), [(2, "b".into())]);
}

#[test]
fn a_withdrawn_job_leaves_the_queue_and_a_duplicate_request_is_dropped() {
    let (mut p, c) = pool(&[("a", 1, 1)]);
    p.handle(request(1, job("j1", "x", 0)), c.at(1));
    assert_eq!(
        p.handle(request(2, job("j1", "x", 0)), c.at(2)),
        [Action::Drop(2)]
    );
    assert_eq!(
        p.handle(
            Event::Withdraw {
                job_id: "j1".into()
            },
            c.at(3)
        ),
        [Action::Withdrawn {
            ticket: 1,
            job: job("j1", "x", 0).job_ref()
        }]
    );
    assert_eq!(p.queue_len(), 0);
}

#[test]
fn a_moved_job_may_wait_even_when_the_queue_is_full() {
    let (mut p, c) = pool(&[("a", 1, 1)]);
    p.settings.max_queue = 1;
    p.handle(request(1, job("j1", "x", 0)), c.at(1));
    let a = p.handle(request(2, job("moved", "y", 1)), c.at(2));
    assert!(matches!(&a[..], [Action::Wait { ticket: 2, .. }]), "{a:?}");
    assert_eq!(p.queue_len(), 2);
}
