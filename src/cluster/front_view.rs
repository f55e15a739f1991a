//! What a cluster front knows of the pool, refreshed from Redis: the leader's view of the
//! live workers (for `/readyz`, `/v1/models` and metrics), and a catalog entry for every
//! served model, built from the model card its workers published, so the front renders and
//! tokenizes prompts without the weights.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::state::ClusterState;
use crate::api::error::ApiError;
use crate::config::Config;
use crate::engine::gguf::GgufFile;
use crate::engine::template::ChatTemplate;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::vision::tower::VisionConfig;
use crate::locks;
use crate::protocol::{ModelCard, PoolView, WorkerInfo, WorkerKind, WorkerLoad};
use crate::session::models::{ModelCatalog, ModelEntry};
use crate::session::roster::{Roster, RosterFuture};

/// How often the view is refreshed.
const REFRESH: Duration = Duration::from_millis(500);

pub struct ClusterView {
    state: ClusterState,
    view: RwLock<PoolView>,
}

impl ClusterView {
    pub fn new(state: ClusterState) -> Self {
        Self {
            state,
            view: RwLock::new(PoolView::default()),
        }
    }

    /// Refreshes the view and the catalog forever.
    pub async fn watch(self: Arc<Self>, models: Arc<ModelCatalog>, config: Config) {
        loop {
            if let Err(e) = self.refresh(&models, &config).await {
                tracing::warn!("refreshing the pool view: {e}");
            }
            tokio::time::sleep(REFRESH).await;
        }
    }

    async fn refresh(&self, models: &ModelCatalog, config: &Config) -> anyhow::Result<()> {
        // No view: no leader has published lately, so no worker is known to be alive.
        let view = self.state.pool().await?.unwrap_or_default();
        for (info, _) in &view.workers {
            if info.kind != WorkerKind::Llm || models.contains(&info.model_id) {
                continue;
            }
            let Some(card) = self.state.card(&info.model_id).await? else {
                continue;
            };
            let entry = entry_from_card(&card, config)?;
            tracing::info!(model = %card.model_id, architecture = %card.architecture, "serving a model a worker published");
            models.add(entry);
        }
        *locks::write(&self.view) = view;
        Ok(())
    }
}

impl Roster for ClusterView {
    /// The live workers, as the leader last published them.
    fn workers(&self) -> RosterFuture<'_, Vec<(WorkerInfo, WorkerLoad)>> {
        let workers = locks::read(&self.view).workers.clone();
        Box::pin(std::future::ready(workers))
    }

    fn set_draining<'a>(&'a self, _: &'a str, _: bool) -> RosterFuture<'a, Result<(), ApiError>> {
        Box::pin(std::future::ready(Err(ApiError::bad_body(
            "In a cluster, drain a worker by stopping it (SIGTERM): it finishes its jobs first",
        ))))
    }

    fn local(&self) -> bool {
        false
    }
}

/// The catalog entry of a model from its card.
pub fn entry_from_card(card: &ModelCard, config: &Config) -> anyhow::Result<ModelEntry> {
    let file = GgufFile::from_bytes(
        &format!("the model card of {}", card.model_id),
        &card.gguf_metadata,
    )?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let template = ChatTemplate::from_gguf(&file, &tokenizer)?;
    let vision = card
        .mmproj_metadata
        .as_deref()
        .map(|m| {
            let f = GgufFile::from_bytes(&format!("the vision tower of {}", card.model_id), m)?;
            anyhow::Ok(Arc::new(VisionConfig::from_gguf(&f)?))
        })
        .transpose()?;
    Ok(ModelEntry::new(
        card.model_id.clone(),
        card.context_length as usize,
        template,
        Arc::new(tokenizer),
        config.tier(&card.model_id).clone(),
    )
    .with_vision(vision))
}
