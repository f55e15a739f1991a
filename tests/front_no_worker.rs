//! The front with every real actor but no worker for its model, which `supernet serve`
//! cannot show (it serves only models it has loaded; in a cluster, workers come and go):
//! chat gets 503 with Retry-After and releases its hold, and `/readyz` says not ready.

mod common;

use std::sync::Arc;

use actix::Actor;
use actix_web::{test, web, App};
use serde_json::{json, Value};
use supernet::admin::Handoff;
use supernet::billing::account_actor::Billing;
use supernet::bus::memory::MemoryBus;
use supernet::bus::Bus;
use supernet::config::Config;
use supernet::coordinator::CoordinatorActor;
use supernet::engine::gguf::GgufFile;
use supernet::engine::template::ChatTemplate;
use supernet::engine::tokenizer::Tokenizer;
use supernet::front::{configure, FrontState};
use supernet::session::actor::Services;
use supernet::session::inbox::NodeInbox;
use supernet::session::models::{ModelCatalog, ModelEntry};
use supernet::store::embedded::RedbStore;
use supernet::store::{Balances, Store};

#[actix_web::test]
async fn no_worker_is_503_and_not_ready() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).expect("store"));
    let acct = store.create_account("t", &Balances { spark: "1".parse().expect("amount"), sogni: "0".parse().expect("amount") }).expect("account");
    let key = store.create_key(&acct.id).expect("key");

    let file = GgufFile::open(common::smollm2()).expect("the model file");
    let tokenizer = Tokenizer::from_gguf(&file).expect("tokenizer");
    let template = ChatTemplate::from_gguf(&file, &tokenizer).expect("template");
    let config = Config::default();
    let mut models = ModelCatalog::default();
    let tier = config.tier("smol").clone();
    models.add(ModelEntry { id: "smol".into(), created: 0, context_length: 8192, template, tokenizer: Arc::new(tokenizer), tier });
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
    let inbox = NodeInbox::new(Arc::clone(&bus), "n1");
    let services = Services {
        node_id: "n1".into(),
        bus,
        billing: Arc::new(Billing::new(Arc::clone(&store), config.billing.clone())),
        coordinator: CoordinatorActor::default().start(),
        inbox_stream: inbox.stream(),
        inbox: inbox.start(),
        models,
        config,
    };
    let state = web::Data::new(FrontState { services: Arc::new(services), admin: Handoff::new(String::new()).expect("token") });
    let app = test::init_service(App::new().app_data(state).configure(configure)).await;

    let req = test::TestRequest::post()
        .uri("/v1/chat/completions")
        .insert_header(("Authorization", format!("Bearer {}", key.api_key)))
        .set_json(json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body: Value = test::read_body_json(resp).await;
    assert_eq!(body["error"]["type"], "service_unavailable");
    // The hold was placed and released in full.
    assert_eq!(store.account(&acct.id).expect("account").balances.spark, "1".parse().expect("amount"));
    let kinds: Vec<_> = store.ledger(&acct.id, 10).expect("ledger").iter().map(|e| format!("{:?}", e.kind)).collect();
    assert_eq!(kinds, ["Credit", "Hold", "Settle", "Release"]);

    let resp = test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(resp.status(), 503);
    let resp = test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(resp.status(), 200);
}
