//! The messages about one job: what a session asks a worker to run, and what the worker
//! and the coordinator answer. Every engine type a job carries has its wire twin here,
//! converted at the edge (the session builds a [`JobSpec`] from engine parameters; the
//! worker turns it back into them and its engine's events into [`WorkerEvent`]s), so an
//! engine refactor cannot change the wire by accident.

use serde::{Deserialize, Serialize};

use super::media::{MediaEvent, MediaTask};
use crate::engine::generate::{FinishReason, GenerateParams, Resume, TokenLogprob};
use crate::engine::sampler::SamplerParams;

/// One generation job, as placed on a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub job_id: String,
    /// Counts placements of this job: a job moved off a dead worker runs as the next attempt,
    /// and events of an earlier attempt are ignored.
    pub attempt: u32,
    pub account_id: String,
    pub model: String,
    pub prompt: Vec<u32>,
    pub params: JobParams,
    /// Where an earlier attempt left off (empty for a first attempt).
    pub resume: Progress,
    /// The stream the worker answers on (the session's node inbox).
    pub reply_to: String,
    /// A media job's task (then `model` is its pipeline and `prompt` is empty).
    pub media: Option<MediaTask>,
    /// The prompt's images, in order; their rows hold placeholder tokens in `prompt`.
    pub images: Vec<JobImage>,
}

/// One image of a prompt: the key of the blob holding the bytes the client sent (PNG, JPEG
/// or WebP; see [`super::images`]), which the worker reads, decodes and encodes, and where
/// its runs of embedding rows sit in the prompt (one run, or one per tile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobImage {
    pub blob: String,
    pub runs: Vec<ImageRunSpec>,
}

/// A run of an image's rows: from prompt index `at`, an `nx` x `ny` grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRunSpec {
    pub at: u32,
    pub nx: u32,
    pub ny: u32,
}

impl JobSpec {
    /// What a worker reports about the job in its heartbeats.
    pub fn job_ref(&self) -> JobRef {
        JobRef {
            job_id: self.job_id.clone(),
            attempt: self.attempt,
            account_id: self.account_id.clone(),
            reply_to: self.reply_to.clone(),
        }
    }
}

/// A job a worker holds, as its heartbeats list it: enough for a coordinator that takes
/// over to know whom to tell if the worker dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub job_id: String,
    pub attempt: u32,
    pub account_id: String,
    pub reply_to: String,
}

/// How to generate: the engine's [`GenerateParams`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobParams {
    pub max_tokens: u64,
    pub sampler: Sampling,
    pub stop: Vec<String>,
    /// A Lark grammar (llguidance's dialect) the output must follow.
    pub grammar: Option<String>,
    /// Report each produced token's log-probability and this many top alternatives.
    pub logprobs: Option<u32>,
    pub logit_bias: Vec<(u32, f32)>,
}

impl JobParams {
    /// Greedy generation of at most `max_tokens`, nothing else asked (a media job's, which
    /// generates no text, is 0).
    pub fn greedy(max_tokens: usize) -> Self {
        Self::from(&GenerateParams {
            max_tokens,
            sampler: SamplerParams::greedy(),
            stop: Vec::new(),
            grammar: None,
            logprobs: None,
            logit_bias: Vec::new(),
        })
    }
}

/// The engine's [`SamplerParams`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub penalty_last_n: u32,
    pub seed: u64,
}

/// The engine's [`Resume`] on the wire: tokens produced so far and the bytes of text the
/// client has of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub tokens: Vec<u32>,
    pub text_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerCommand {
    Run(Box<JobSpec>),
    /// Stop a job now; the worker still reports what it produced.
    Cancel {
        job_id: String,
    },
}

/// What a worker says about one attempt of a job, in order: `Accepted`, then `Text`s and
/// one `Finished` or `Failed`; or only `Rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerEvent {
    /// The worker took the job; its events follow.
    Accepted { worker_id: String },
    /// The worker did not take the job (`busy`: its queue was full), so nothing ran.
    Rejected { busy: bool, reason: String },
    /// New text (never empty) and the tokens produced since the last text, with their
    /// log-probabilities when the job asks for them.
    Text {
        text: String,
        tokens: Vec<u32>,
        logprobs: Vec<Logprob>,
    },
    /// The job ended; the counts are what was processed and produced.
    Finished {
        finish: Finish,
        prompt_tokens: u64,
        completion_tokens: u64,
    },
    /// The engine failed the job.
    Failed(String),
    /// A media job's progress and outcome.
    Media(MediaEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finish {
    Stop,
    Length,
    Cancelled,
}

/// A produced token's log-probability and the most likely tokens at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Why a job waits for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueReason {
    /// No live worker serves the model (one may be joining, or the job's worker died).
    NoWorkers,
    /// The account has as many jobs running as it may.
    ConcurrencyLimit,
    /// Every worker of the model is full.
    Queued,
}

impl QueueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoWorkers => "no_workers",
            Self::ConcurrencyLimit => "concurrency_limit",
            Self::Queued => "queued",
        }
    }
}

/// The coordinator's answer to a placement request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Placement {
    /// The job is on this worker's inbox.
    Placed { worker_id: String },
    /// The job waits; it is placed when a worker has room.
    Waiting(QueueReason),
    /// The job cannot be placed (`busy`: the coordinator's queue is full; otherwise no
    /// worker serves it).
    Refused { busy: bool, reason: String },
}

/// What a front's inbox receives about one attempt of one of its sessions' jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeMessage {
    /// From the worker running the attempt.
    Worker { attempt: u32, event: WorkerEvent },
    /// From the coordinator.
    Placement { attempt: u32, placement: Placement },
    /// The coordinator declared the attempt's worker dead: the job must move.
    Lost { attempt: u32, worker_id: String },
}

/// Field-by-field conversions both ways between a wire struct and its engine twin, from
/// one list of fields: `same` ones are copied, `cast` ones change integer width, `into`
/// ones convert by their own `From`s, `cast_opt` ones are optional integers.
macro_rules! mirror {
    ($wire:ident <=> $engine:ident {
        same: [$($s:ident),*],
        cast: [$($c:ident: $cw:ty, $ce:ty),*],
        into: [$($i:ident),*],
        cast_opt: [$($o:ident: $ow:ty, $oe:ty),*] $(,)?
    }) => {
        impl From<&$engine> for $wire {
            fn from(e: &$engine) -> Self {
                Self {
                    $($s: e.$s.clone(),)*
                    $($c: e.$c as $cw,)*
                    $($i: (&e.$i).into(),)*
                    $($o: e.$o.map(|v| v as $ow),)*
                }
            }
        }

        impl From<$wire> for $engine {
            fn from(w: $wire) -> Self {
                Self {
                    $($s: w.$s,)*
                    $($c: w.$c as $ce,)*
                    $($i: w.$i.into(),)*
                    $($o: w.$o.map(|v| v as $oe),)*
                }
            }
        }
    };
}

mirror!(JobParams <=> GenerateParams {
    same: [stop, grammar, logit_bias],
    cast: [max_tokens: u64, usize],
    into: [sampler],
    cast_opt: [logprobs: u32, usize],
});

mirror!(Sampling <=> SamplerParams {
    same: [temperature, top_p, min_p, repetition_penalty, frequency_penalty, presence_penalty, seed],
    cast: [top_k: u32, usize, penalty_last_n: u32, usize],
    into: [],
    cast_opt: [],
});

impl From<&Resume> for Progress {
    fn from(r: &Resume) -> Self {
        Self {
            tokens: r.tokens.clone(),
            text_bytes: r.text_bytes as u64,
        }
    }
}

impl From<Progress> for Resume {
    fn from(p: Progress) -> Self {
        Self {
            tokens: p.tokens,
            text_bytes: p.text_bytes as usize,
        }
    }
}

impl From<FinishReason> for Finish {
    fn from(f: FinishReason) -> Self {
        match f {
            FinishReason::Stop => Self::Stop,
            FinishReason::Length => Self::Length,
            FinishReason::Cancelled => Self::Cancelled,
        }
    }
}

impl From<Finish> for FinishReason {
    fn from(f: Finish) -> Self {
        match f {
            Finish::Stop => Self::Stop,
            Finish::Length => Self::Length,
            Finish::Cancelled => Self::Cancelled,
        }
    }
}

impl From<TokenLogprob> for Logprob {
    fn from(l: TokenLogprob) -> Self {
        Self {
            token: l.token,
            logprob: l.logprob,
            top: l.top,
        }
    }
}

impl From<&Logprob> for TokenLogprob {
    fn from(l: &Logprob) -> Self {
        Self {
            token: l.token,
            logprob: l.logprob,
            top: l.top.clone(),
        }
    }
}
