//! The session: one request's turn. [`prompt`] turns a validated request into prompt ids
//! and clamped sampling, with the tools written into the conversation ([`tool_prompt`]) and
//! the output's grammar ([`grammar`]); [`markup`] splits the output into content, reasoning
//! and tool calls; [`actor`] is the SessionActor that drives billing, placement and
//! streaming; [`placement`] is how it asks the coordinator for a worker; [`inbox`] routes
//! workers' and the coordinator's answers to sessions; [`models`] is what this node knows
//! of the models it serves; [`roster`] is how the front sees the workers; [`prepare_pool`]
//! runs the parsing and preparing off the HTTP threads.
//!
//! [`Services`] is what every session of a node shares. `supernet serve` and `supernet
//! front` build it from different parts (in-process bus and embedded store, or Redis), and
//! nothing in a session knows which.

pub mod actor;
pub mod grammar;
pub mod inbox;
pub mod markup;
pub mod models;
pub mod placement;
pub mod prepare_pool;
pub mod prompt;
pub mod refusal;
pub mod roster;
pub mod tool_prompt;

use std::sync::Arc;

use crate::billing::accounts::Billing;
use crate::bus::Bus;
use crate::config::Config;

/// What every session of this node shares.
pub struct Services {
    pub node_id: String,
    pub bus: Arc<dyn Bus>,
    pub billing: Arc<Billing>,
    /// Whether a hold writes its job's placement request with itself (a store kept in the
    /// bus's own Redis can; see [`crate::bus::Outbox`]). Otherwise the session sends it once
    /// the hold is in.
    pub hold_carries_placement: bool,
    /// The workers as this node sees them, for the model list, readiness and drains.
    pub roster: Arc<dyn roster::Roster>,
    /// Route workers' and the coordinator's answers to this node's sessions, one stream per
    /// thread.
    pub inboxes: inbox::NodeInboxes,
    pub models: Arc<models::ModelCatalog>,
    pub config: Config,
    /// Where request bodies are parsed and prompts prepared.
    pub preparer: prepare_pool::PreparePool,
    /// Hosted tools' media: assets and signed URLs.
    pub media: Arc<crate::media::MediaServices>,
    /// Durable runs: their log, and the runs this front executes.
    pub runs: Arc<crate::runs::Runs>,
    /// Saved workflow templates.
    pub templates: Arc<dyn crate::workflows::templates::store::TemplateStore>,
}

impl Services {
    /// The media pipelines live, undrained media workers run: which hosted tools can run.
    pub async fn media_pipelines(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .roster
            .media_workers()
            .await
            .into_iter()
            .filter(|(_, l)| !l.draining)
            .flat_map(|(i, _)| i.pipelines)
            .collect();
        p.sort();
        p.dedup();
        p
    }
}
