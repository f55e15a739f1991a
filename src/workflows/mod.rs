//! Creative workflows (`/v1/creative-agent/workflows`, contract §4): a DAG of hosted media
//! tool steps run durably. A workflow is another kind of run, not a second engine: it lives
//! in the run log ([`crate::runs::log`], kind [`crate::runs::log::KIND_WORKFLOW`]) under a
//! lease, and the runs' upkeep relays its cancels, renews its lease and hands it to another
//! front when its front dies. What is its own: the [`plan`] ([`read`] from JSON) and its
//! checks, the [`bind`]ing
//! of outputs into inputs, the [`state`] folded from its events, how one [`start`]s, its
//! [`executor`] (and the LLM round of an [`interactive`] step), and the saved recipes that
//! start one ([`templates`]). [`drafts`] makes the planner tools' output what these
//! routes accept.

pub mod bind;
pub mod drafts;
pub mod executor;
pub mod interactive;
pub mod plan;
pub mod read;
pub mod start;
pub mod state;
pub mod templates;

/// The prefix of workflow ids (`wf_` + 128 random bits): how a front adopting an orphaned
/// run knows which executor it needs.
pub const ID_PREFIX: &str = "wf_";

pub fn is_workflow(run_id: &str) -> bool {
    run_id.starts_with(ID_PREFIX)
}
