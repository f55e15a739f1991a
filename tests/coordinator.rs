//! The coordinator places jobs on the WorkerActor of the right model, with the real engine
//! behind it: an unknown model is refused (503 material), a full worker is refused at once
//! (429 material), and a placed job streams its text.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Actor;
use supernet::coordinator::{loads, CoordinatorActor, Place, PlaceError, Register, Workers};
use supernet::engine::generate::GenerateParams;
use supernet::engine::sampler::SamplerParams;
use supernet::engine::tokenizer::Tokenizer;
use supernet::engine::Model;
use supernet::worker::actor::{WorkerActor, WorkerInfo};
use supernet::worker::engine_thread::{Job, JobEvent};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn job(id: &str, prompt: &[u32], max_tokens: usize) -> (Job, Arc<AtomicBool>, UnboundedReceiver<JobEvent>) {
    let (tx, rx) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let params = GenerateParams { max_tokens, sampler: SamplerParams::greedy(), stop: Vec::new() };
    (Job { id: id.into(), prompt: prompt.to_vec(), params, cancel: Arc::clone(&cancel), events: tx }, cancel, rx)
}

#[actix::test]
async fn jobs_go_to_a_worker_of_their_model_or_are_refused_at_once() {
    let model = Arc::new(Model::load(common::smollm2()).expect("the model"));
    let tok = Arc::new(Tokenizer::from_gguf(&model.file).expect("tokenizer"));
    let prompt = tok.encode("Once upon a time").expect("encode");
    let coord = CoordinatorActor::default().start();

    let (j, _, _rx) = job("j0", &prompt, 4);
    let r = coord.send(Place { model: "smol".into(), job: j }).await.expect("mailbox");
    assert_eq!(r, Err(PlaceError::NoWorker("smol".into())));

    let info = WorkerInfo { worker_id: "w1".into(), model_id: "smol".into(), context_length: model.config.context_length };
    // Room for one waiting job behind the running one.
    let worker = WorkerActor::new(info.clone(), Arc::clone(&model), Arc::clone(&tok), 2, 1).expect("worker").start();
    coord.send(Register { info, addr: worker }).await.expect("mailbox");

    let (j, cancel, mut rx) = job("j1", &prompt, 200);
    assert_eq!(coord.send(Place { model: "smol".into(), job: j }).await.expect("mailbox"), Ok("w1".to_string()));
    assert!(matches!(rx.recv().await, Some(JobEvent::Text(_))));

    // j1 runs (it has streamed), so j2 waits and j3 finds no room.
    let (j, _, _rx2) = job("j2", &prompt, 4);
    assert_eq!(coord.send(Place { model: "smol".into(), job: j }).await.expect("mailbox"), Ok("w1".to_string()));
    let (j, _, _rx3) = job("j3", &prompt, 4);
    assert_eq!(coord.send(Place { model: "smol".into(), job: j }).await.expect("mailbox"), Err(PlaceError::Busy("smol".into())));

    let workers = coord.send(Workers).await.expect("mailbox");
    let l = loads(&workers).await;
    assert_eq!((l.len(), l[0].2.running, l[0].2.queued), (1, 1, 1));

    cancel.store(true, Ordering::SeqCst);
    loop {
        match rx.recv().await {
            Some(JobEvent::Finished { completion_tokens, .. }) => {
                assert!(completion_tokens < 200);
                break;
            }
            Some(_) => {}
            None => panic!("the job ended without a Finished event"),
        }
    }
}
