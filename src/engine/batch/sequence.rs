//! One sequence in the batch scheduler: its tokens, how far its cache is computed, the KV
//! blocks it holds, and its decoding state.

use std::borrow::Cow;

use crate::engine::generate::Decoding;
use crate::engine::kv::blocks::BlockPool;
use crate::engine::kv::{blocks_for, KvStore, BLOCK};
use crate::engine::vision::SeqImages;

/// The caller's name for a sequence.
pub type SeqId = u64;

pub(super) struct Sequence {
    pub id: SeqId,
    /// Prompt, then produced tokens; the last one is not computed yet while it runs.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Leading positions whose keys and values are in the cache.
    pub computed: usize,
    /// The block table.
    pub blocks: Vec<u32>,
    /// Prefix hashes of the leading full blocks that are registered (or known to be).
    pub hashes: Vec<u64>,
    pub decoding: Decoding,
    /// Order of arrival: the newest is preempted first.
    pub arrival: u64,
    /// Its recurrent-state slot while running (hybrid models); a sequence computed from
    /// position 0 starts its slot afresh, so preemption's recompute is exact.
    pub slot: usize,
    /// Its images, if the prompt has any.
    pub images: Option<Box<SeqImages>>,
}

impl Sequence {
    /// What the prefix cache keys block `i`'s positions by: the tokens, or for image rows
    /// their content (built only for a block that holds images).
    fn block_keys(&self, i: usize) -> Cow<'_, [u32]> {
        let range = i * BLOCK..(i + 1) * BLOCK;
        match &self.images {
            Some(im) if range.clone().any(|j| im.spans.run_at(j).is_some()) => {
                Cow::Owned(range.map(|j| im.cache_key(j, self.tokens[j])).collect())
            }
            _ => Cow::Borrowed(&self.tokens[range]),
        }
    }

    /// Tokens to compute before the next token can be sampled.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// Takes the registered blocks that hold a prefix of this sequence's tokens, leaving at
    /// least its last token to compute (a fully cached block holding it is copied first:
    /// copy-on-write). Returns false, holding nothing, if the copy found no free block.
    pub fn take_cached_prefix(&mut self, pool: &mut BlockPool, store: &mut KvStore) -> bool {
        debug_assert!(self.blocks.is_empty() && self.computed == 0);
        let mut parent = 0;
        for i in 0..self.tokens.len() / BLOCK {
            let Some((b, h)) = pool.lookup(parent, &self.block_keys(i)) else {
                break;
            };
            self.blocks.push(b);
            self.hashes.push(h);
            parent = h;
        }
        self.computed = self.blocks.len() * BLOCK;
        if self.computed == self.tokens.len() && self.computed > 0 {
            let Some(copy) = pool.allocate() else {
                self.release(pool);
                return false;
            };
            let shared = self.blocks.pop().expect("at least one cached block");
            store.grow_to(pool.high_water());
            store.copy_block(shared, copy);
            pool.release(shared);
            self.blocks.push(copy);
            self.hashes.pop();
            self.computed -= 1;
        }
        true
    }

    /// Holds enough blocks for `n` more positions. On failure it holds what it held before.
    pub fn grow(&mut self, pool: &mut BlockPool, n: usize) -> bool {
        debug_assert!(
            self.computed.is_multiple_of(BLOCK)
                || pool.is_private(self.blocks[self.computed / BLOCK]),
            "writes go to a private block"
        );
        let need = blocks_for(self.computed + n).saturating_sub(self.blocks.len());
        let mut got = Vec::with_capacity(need);
        for _ in 0..need {
            match pool.allocate() {
                Some(b) => got.push(b),
                None => {
                    got.into_iter().for_each(|b| pool.release(b));
                    return false;
                }
            }
        }
        self.blocks.extend(got);
        true
    }

    /// Marks `n` more positions computed and registers the blocks that became full, so
    /// later sequences with the same prefix can share them.
    pub fn computed_more(&mut self, n: usize, pool: &mut BlockPool, prefix_cache: bool) {
        self.computed += n;
        if !prefix_cache {
            return;
        }
        while (self.hashes.len() + 1) * BLOCK <= self.computed {
            let i = self.hashes.len();
            let parent = self.hashes.last().copied().unwrap_or(0);
            let h = pool.register(self.blocks[i], parent, &self.block_keys(i));
            self.hashes.push(h);
        }
    }

    /// Gives back every block; the cache must be computed again (preemption, or the end).
    pub fn release(&mut self, pool: &mut BlockPool) {
        self.blocks.drain(..).for_each(|b| pool.release(b));
        self.hashes.clear();
        self.computed = 0;
    }
}
