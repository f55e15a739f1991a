//! Continuous batching: one scheduler owns the paged KV cache and every sequence a worker
//! holds, and each [`Scheduler::step`] is one forward pass that advances them all.
//!
//! A step first gives every running sequence that is decoding its next position, oldest
//! first; when the pool has no block left, the newest running sequence is preempted (its
//! blocks freed, its tokens kept) and waits at the head of the queue to be computed again.
//! Running prompts then continue in chunks, and waiting ones are admitted, within
//! [`BatchConfig::max_batch_tokens`] rows per step, so a long prompt never stalls the
//! streams already running. Admission first takes whatever full blocks of the prompt the
//! prefix cache holds.
//!
//! The pass uses [`Arithmetic::Invariant`]: a sequence's logits do not depend on what shares
//! its batch or on how its prompt was chunked, so outputs are reproducible under any load,
//! recomputing a preempted sequence is exact, and so is continuing another worker's
//! generation ([`Resume`]).

mod sequence;

use std::collections::VecDeque;
use std::sync::Arc;

pub use sequence::SeqId;
use sequence::Sequence;

use crate::engine::backend::{Arithmetic, Backend};
use crate::engine::generate::{Decoding, FinishReason, GenerateParams, Resume, TokenLogprob};
use crate::engine::kv::blocks::BlockPool;
use crate::engine::kv::{blocks_for, KvStore, BLOCK};
use crate::engine::model::{Model, SeqBatch};
use crate::engine::tokenizer::Tokenizer;
use crate::engine::vision::tower::VisionTower;
use crate::engine::vision::SeqImages;
use crate::engine::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Sequences in one step at most.
    pub max_batch: usize,
    /// Rows (tokens) in one step at most; raised to `max_batch` if lower.
    pub max_batch_tokens: usize,
    /// KV-cache positions of the pool (rounded up to whole blocks).
    pub kv_tokens: usize,
    /// Share full blocks of common prefixes between sequences.
    pub prefix_cache: bool,
}

/// The defaults suit the CPU backend: on two cores the batched forward pass is bound by
/// arithmetic from about 8 sequences on (`supernet bench --concurrency 1,4,8,16`), so a
/// larger batch only lengthens every stream's inter-token latency.
impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 8,
            max_batch_tokens: 256,
            kv_tokens: 8192,
            prefix_cache: true,
        }
    }
}

/// Upper bounds of the batch-size histogram's buckets (sequences per step).
pub const BATCH_BUCKETS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// What the scheduler has done and holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchStats {
    pub running: usize,
    pub waiting: usize,
    pub kv_blocks_used: usize,
    pub kv_blocks_total: usize,
    /// Prompt tokens looked up in the prefix cache at admission, and found there.
    pub prefix_query_tokens: u64,
    pub prefix_hit_tokens: u64,
    pub preemptions: u64,
    pub steps: u64,
    /// Steps by sequences in the batch: `batch_sizes[i]` counts those of at most
    /// `BATCH_BUCKETS[i]` (and more than the bucket before); the last slot counts the rest.
    pub batch_sizes: [u64; BATCH_BUCKETS.len() + 1],
    /// Sequences summed over all steps.
    pub batch_sum: u64,
    /// Tokens sampled (decode and the first token after each prompt).
    pub tokens_generated: u64,
    /// Images the vision tower encoded, and images whose rows the prefix cache already
    /// held (a conversation resending a photo), so nothing was encoded.
    pub images_encoded: u64,
    pub images_cached: u64,
}

/// A generation to run.
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// Where an earlier attempt left it.
    pub resume: Resume,
    /// The prompt's images (placeholder tokens at their rows).
    pub images: Option<Box<SeqImages>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Text to deliver now (possibly empty) and the token produced, if any.
    Token {
        id: SeqId,
        text: String,
        token: Option<u32>,
        /// The token's log-probability, when the request asks for them.
        logprob: Option<TokenLogprob>,
    },
    /// The sequence failed (its grammar gave up) and was dropped; it has no result.
    Failed { id: SeqId, reason: String },
    /// The sequence ended; the counts are the prompt's and every produced token.
    Finished {
        id: SeqId,
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
}

pub struct Scheduler {
    model: Arc<Model>,
    tok: Arc<Tokenizer>,
    config: BatchConfig,
    pool: BlockPool,
    store: KvStore,
    waiting: VecDeque<Sequence>,
    /// Oldest first.
    running: Vec<Sequence>,
    arrivals: u64,
    /// Recurrent-state slots of the store no running sequence holds (hybrid models).
    free_slots: Vec<usize>,
    /// Positions a sequence may use: the model's context, or the pool if that is smaller.
    context: usize,
    stats: BatchStats,
    /// The vision tower, when the model has one.
    tower: Option<Arc<VisionTower>>,
}

impl Scheduler {
    pub fn new(model: Arc<Model>, tok: Arc<Tokenizer>, mut config: BatchConfig) -> Self {
        config.max_batch = config.max_batch.max(1);
        config.max_batch_tokens = config.max_batch_tokens.max(config.max_batch);
        // A recurrent layer's state at a block boundary is not in the block, so a cached
        // prefix could not be resumed from; hybrid models compute every prompt whole (see
        // ARCHITECTURE.md, "Hybrid models").
        if model.config.delta_net.is_some() {
            config.prefix_cache = false;
        }
        let blocks = blocks_for(config.kv_tokens).max(1);
        let context = model.config.context_length.min(blocks * BLOCK);
        let store = model.new_store();
        let stats = BatchStats {
            kv_blocks_total: blocks,
            ..BatchStats::default()
        };
        Self {
            model,
            tok,
            config,
            pool: BlockPool::new(blocks),
            store,
            waiting: VecDeque::new(),
            running: Vec::new(),
            arrivals: 0,
            free_slots: (0..config.max_batch).rev().collect(),
            context,
            stats,
            tower: None,
        }
    }

    /// Lets prompts carry images, encoded by `tower`.
    pub fn with_vision(mut self, tower: Arc<VisionTower>) -> Self {
        self.tower = Some(tower);
        self
    }

    /// Positions one sequence may use.
    pub fn context(&self) -> usize {
        self.context
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            running: self.running.len(),
            waiting: self.waiting.len(),
            kv_blocks_used: self.pool.used(),
            ..self.stats.clone()
        }
    }

    /// Queues a generation. Returns what to deliver at once (text of resumed tokens, or the
    /// end when nothing is left to generate); fails, queueing nothing, on a bad request.
    pub fn add(&mut self, id: SeqId, req: Request) -> Result<Vec<Output>, EngineError> {
        if req.prompt.is_empty() {
            return Err(EngineError::Tokenizer("the prompt is empty".into()));
        }
        self.model.check_tokens(&req.prompt)?;
        self.model.check_tokens(&req.resume.tokens)?;
        if let Some(im) = &req.images {
            let tower = self.tower.as_ref().ok_or(EngineError::NoVision)?;
            im.check(req.prompt.len(), &tower.config)?;
        }
        if req.prompt.len() >= self.context {
            return Err(EngineError::ContextFull {
                needed: req.prompt.len() + 1,
                limit: self.context,
            });
        }
        let constraint = req
            .params
            .grammar
            .as_deref()
            .map(|g| self.tok.grammars()?.compile(g))
            .transpose()?;
        let (decoding, first) = Decoding::new(
            &self.tok,
            &req.prompt,
            &req.params,
            self.context,
            &req.resume,
            constraint,
        );
        let prompt_len = req.prompt.len();
        let mut tokens = req.prompt;
        tokens.extend(&req.resume.tokens);
        let mut out = Vec::new();
        if !first.text.is_empty() {
            out.push(Output::Token {
                id,
                text: first.text,
                token: None,
                logprob: None,
            });
        }
        if let Some(finish) = first.finish {
            out.push(Output::Finished {
                id,
                finish,
                prompt_tokens: prompt_len,
                completion_tokens: decoding.produced().len(),
            });
            return Ok(out);
        }
        self.arrivals += 1;
        self.waiting.push_back(Sequence {
            id,
            tokens,
            prompt_len,
            computed: 0,
            blocks: Vec::new(),
            hashes: Vec::new(),
            decoding,
            arrival: self.arrivals,
            slot: 0,
            images: req.images,
        });
        Ok(out)
    }

    /// Stops a sequence wherever it is; `None` if it is not here (it already finished).
    pub fn cancel(&mut self, id: SeqId) -> Option<Output> {
        let mut seq = if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let seq = self.running.remove(i);
            self.free_slots.push(seq.slot);
            seq
        } else {
            let i = self.waiting.iter().position(|s| s.id == id)?;
            self.waiting.remove(i)?
        };
        seq.release(&mut self.pool);
        Some(finished(&seq, FinishReason::Cancelled))
    }

    /// One forward pass over every running sequence (and newly admitted ones): returns each
    /// sampled token's text and each sequence that ended.
    pub fn step(&mut self, be: &dyn Backend) -> Vec<Output> {
        let mut budget = self.config.max_batch_tokens;
        let mut rows = vec![0usize; self.running.len()];

        // Decoding sequences first, oldest first, preempting the newest when out of blocks.
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].pending() == 1 {
                while !self.running[i].grow(&mut self.pool, 1) {
                    let victim = self.running.len() - 1;
                    self.preempt(victim);
                    rows.pop();
                    if victim == i {
                        break;
                    }
                }
                if i < self.running.len() {
                    rows[i] = 1;
                    budget -= 1;
                }
            }
            i += 1;
        }
        // Prompts being computed continue, in chunks that fit the budget and the pool.
        for (seq, n) in self.running.iter_mut().zip(rows.iter_mut()) {
            if *n == 0 && budget > 0 {
                *n = room(seq, &self.pool, seq.pending().min(budget));
                if *n > 0 && seq.grow(&mut self.pool, *n) {
                    budget -= *n;
                } else {
                    *n = 0;
                }
            }
        }
        // Then waiting sequences, in order, while there is room.
        let mut admitted = Vec::new();
        while self.running.len() + admitted.len() < self.config.max_batch && budget > 0 {
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            let cached = !self.config.prefix_cache
                || seq.take_cached_prefix(&mut self.pool, &mut self.store);
            let n = room(&seq, &self.pool, seq.pending().min(budget));
            if !cached || n == 0 || !seq.grow(&mut self.pool, n) {
                seq.release(&mut self.pool);
                self.waiting.push_front(seq);
                break;
            }
            if self.config.prefix_cache {
                self.stats.prefix_query_tokens += seq.tokens.len() as u64;
                self.stats.prefix_hit_tokens += seq.computed as u64;
            }
            budget -= n;
            self.encode_images(be, &mut seq);
            admitted.push((seq, n));
        }
        for (mut seq, n) in admitted {
            seq.slot = self
                .free_slots
                .pop()
                .expect("a slot for each of at most max_batch running sequences");
            let at = self.running.partition_point(|s| s.arrival < seq.arrival);
            self.running.insert(at, seq);
            rows.insert(at, n);
        }
        self.run(be, &rows)
    }

    /// The forward pass over `rows[i]` tokens of running sequence `i`, then sampling.
    fn run(&mut self, be: &dyn Backend, rows: &[usize]) -> Vec<Output> {
        let batch: Vec<SeqBatch> = self
            .running
            .iter()
            .zip(rows)
            .filter(|(_, &n)| n > 0)
            .map(|(s, &n)| SeqBatch {
                tokens: &s.tokens[s.computed..s.computed + n],
                start: s.computed,
                blocks: &s.blocks,
                slot: s.slot,
                logits: s.computed + n == s.tokens.len(),
                images: s.images.as_ref().map(|im| &im.spans),
            })
            .collect();
        if batch.is_empty() {
            return Vec::new();
        }
        let in_step = batch.len();
        self.store.grow_to(self.pool.high_water());
        let mut logits = self
            .model
            .forward_batch(be, &mut self.store, &batch, Arithmetic::Invariant)
            .into_iter();
        drop(batch);

        let mut out = Vec::new();
        let mut done = Vec::new();
        for (i, &n) in rows.iter().enumerate().filter(|(_, &n)| n > 0) {
            let seq = &mut self.running[i];
            seq.computed_more(n, &mut self.pool, self.config.prefix_cache);
            if seq.pending() > 0 {
                continue; // more of the prompt to compute first
            }
            let mut l = logits
                .next()
                .expect("one row of logits per sequence whose tokens are all computed");
            let a = seq.decoding.advance(&self.tok, &mut l);
            if let Some(reason) = a.failed {
                out.push(Output::Failed { id: seq.id, reason });
                done.push(i);
                continue;
            }
            self.stats.tokens_generated += u64::from(a.token.is_some());
            out.push(Output::Token {
                id: seq.id,
                text: a.text,
                token: a.token,
                logprob: a.logprob,
            });
            match (a.finish, a.token) {
                (Some(f), _) => {
                    out.push(finished(seq, f));
                    done.push(i);
                }
                (None, Some(t)) => seq.tokens.push(t),
                (None, None) => unreachable!("a step without a token ends the generation"),
            }
        }
        for i in done.into_iter().rev() {
            let mut seq = self.running.remove(i);
            self.free_slots.push(seq.slot);
            seq.release(&mut self.pool);
        }
        self.stats.steps += 1;
        self.stats.batch_sum += in_step as u64;
        let bucket = BATCH_BUCKETS
            .iter()
            .position(|&b| in_step <= b)
            .unwrap_or(BATCH_BUCKETS.len());
        self.stats.batch_sizes[bucket] += 1;
        out
    }

    /// Encodes the images of an admitted sequence whose rows are still to compute (its
    /// cached prefix may hold some or all of them); rows once encoded are kept, so a
    /// preempted sequence does not encode again.
    fn encode_images(&mut self, be: &dyn Backend, seq: &mut Sequence) {
        let (Some(tower), Some(im)) = (&self.tower, seq.images.as_deref_mut()) else {
            return;
        };
        for i in 0..im.images.len() {
            let runs = || im.spans.runs.iter().filter(|r| r.image == i);
            if runs().all(|r| r.rows.is_some()) {
                continue;
            }
            if runs().all(|r| r.end() <= seq.computed) {
                self.stats.images_cached += 1;
                continue;
            }
            tower.encode_into(be, &im.images, i, &mut im.spans);
            self.stats.images_encoded += 1;
        }
    }

    /// Frees running sequence `i`'s blocks and queues it first, to be computed again.
    fn preempt(&mut self, i: usize) {
        let mut seq = self.running.remove(i);
        self.free_slots.push(seq.slot);
        tracing::debug!(
            seq = seq.id,
            tokens = seq.tokens.len(),
            "KV pool full: preempting the newest sequence"
        );
        seq.release(&mut self.pool);
        self.stats.preemptions += 1;
        self.waiting.push_front(seq);
    }
}

/// How many of `want` more positions `seq` can get blocks for now.
fn room(seq: &Sequence, pool: &BlockPool, want: usize) -> usize {
    want.min(((seq.blocks.len() + pool.available()) * BLOCK).saturating_sub(seq.computed))
}

fn finished(seq: &Sequence, finish: FinishReason) -> Output {
    Output::Finished {
        id: seq.id,
        finish,
        prompt_tokens: seq.prompt_len,
        completion_tokens: seq.decoding.produced().len(),
    }
}
