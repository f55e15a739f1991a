//! Which KV blocks are free, who holds each, and the prefix cache.
//!
//! A block is held by the sequences whose tables name it (a reference count). A full block
//! can be registered under the hash of its whole token prefix (the previous block's hash and
//! its own tokens), and a later sequence that starts with the same tokens takes the block
//! instead of computing it again: a chat's system prompt and its earlier turns. Registered
//! blocks are read-only; whoever must write into one copies it first. When nobody holds a
//! registered block it stays cached until its space is needed, least recently used first.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use super::BLOCK;

/// The hash of a block's tokens after the prefix whose hash is `parent` (0 for none).
pub fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// What a registered block holds, checked on every lookup so that a hash collision can
/// never hand out the wrong keys and values.
struct Entry {
    parent: u64,
    tokens: [u32; BLOCK],
}

pub struct BlockPool {
    capacity: usize,
    /// Block ids never handed out yet are `fresh..capacity`.
    fresh: usize,
    free: Vec<u32>,
    refs: Vec<u32>,
    /// The hash each registered block is known by.
    hash_of: Vec<Option<u64>>,
    cached: HashMap<u64, (u32, Entry)>,
    /// Registered blocks nobody holds, by when they were last released.
    idle: BTreeMap<u64, u32>,
    idle_since: Vec<u64>,
    clock: u64,
}

impl BlockPool {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            fresh: 0,
            free: Vec::new(),
            refs: vec![0; capacity],
            hash_of: vec![None; capacity],
            cached: HashMap::new(),
            idle: BTreeMap::new(),
            idle_since: vec![0; capacity],
            clock: 0,
        }
    }

    /// Blocks some sequence holds.
    pub fn used(&self) -> usize {
        self.fresh - self.free.len() - self.idle.len()
    }

    /// Blocks that could be handed out now (free, never used, or cached and idle).
    pub fn available(&self) -> usize {
        self.capacity - self.used()
    }

    /// The highest block id ever handed out, plus one: how far the store must reach.
    pub fn high_water(&self) -> usize {
        self.fresh
    }

    /// A block for one holder: a free one, else a new one, else the least recently used
    /// idle cached one (which leaves the cache). `None` when every block is held.
    pub fn allocate(&mut self) -> Option<u32> {
        let b = if let Some(b) = self.free.pop() {
            b
        } else if self.fresh < self.capacity {
            self.fresh += 1;
            (self.fresh - 1) as u32
        } else {
            let (_, b) = self.idle.pop_first()?;
            if let Some(h) = self.hash_of[b as usize].take() {
                self.cached.remove(&h);
            }
            b
        };
        self.refs[b as usize] = 1;
        Some(b)
    }

    /// Drops one hold on `b`; a block nobody holds is freed, or kept idle if registered.
    pub fn release(&mut self, b: u32) {
        let i = b as usize;
        debug_assert!(self.refs[i] > 0, "block {b} released more often than held");
        self.refs[i] -= 1;
        if self.refs[i] > 0 {
            return;
        }
        if self.hash_of[i].is_some() {
            self.clock += 1;
            self.idle_since[i] = self.clock;
            self.idle.insert(self.clock, b);
        } else {
            self.free.push(b);
        }
    }

    /// Whether `b` may be written by its one holder (held once and not registered).
    pub fn is_private(&self, b: u32) -> bool {
        self.refs[b as usize] == 1 && self.hash_of[b as usize].is_none()
    }

    /// The registered block for `tokens` after the prefix `parent`, taken for one more
    /// holder.
    pub fn lookup(&mut self, parent: u64, tokens: &[u32]) -> Option<(u32, u64)> {
        let hash = chain_hash(parent, tokens);
        let (b, entry) = self.cached.get(&hash)?;
        if entry.parent != parent || entry.tokens[..] != *tokens {
            return None;
        }
        let b = *b;
        if self.refs[b as usize] == 0 {
            self.idle.remove(&self.idle_since[b as usize]);
        }
        self.refs[b as usize] += 1;
        Some((b, hash))
    }

    /// Registers the full block `b` as holding `tokens` after the prefix `parent`, unless
    /// another block already does; returns the block's hash either way.
    pub fn register(&mut self, b: u32, parent: u64, tokens: &[u32]) -> u64 {
        let hash = chain_hash(parent, tokens);
        if self.hash_of[b as usize].is_none() && !self.cached.contains_key(&hash) {
            let mut t = [0; BLOCK];
            t.copy_from_slice(tokens);
            self.cached.insert(hash, (b, Entry { parent, tokens: t }));
            self.hash_of[b as usize] = Some(hash);
        }
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(seed: u32) -> Vec<u32> {
        (0..BLOCK as u32).map(|i| i * 7 + seed).collect()
    }

    #[test]
    fn blocks_are_reused_and_idle_cached_ones_evicted_least_recent_first() {
        let mut p = BlockPool::new(3);
        let (a, b, c) = (
            p.allocate().unwrap(),
            p.allocate().unwrap(),
            p.allocate().unwrap(),
        );
        assert_eq!((p.used(), p.allocate()), (3, None));
        let ha = p.register(a, 0, &toks(1));
        p.register(b, ha, &toks(2));
        p.release(a);
        p.release(b);
        p.release(c);
        assert_eq!((p.used(), p.available()), (0, 3));
        // The unregistered block is reused first; then the idle cached ones, oldest first.
        assert_eq!(p.allocate(), Some(c));
        assert_eq!(p.allocate(), Some(a));
        assert!(
            p.lookup(0, &toks(1)).is_none(),
            "an evicted block is no longer cached"
        );
        assert_eq!(p.lookup(ha, &toks(2)), Some((b, chain_hash(ha, &toks(2)))));
        assert_eq!(p.allocate(), None, "a looked-up block is held again");
    }

    #[test]
    fn a_prefix_matches_only_with_the_same_parent_and_tokens() {
        let mut p = BlockPool::new(4);
        let a = p.allocate().unwrap();
        let h = p.register(a, 0, &toks(1));
        assert!(!p.is_private(a), "registered blocks are read-only");
        assert!(p.lookup(5, &toks(1)).is_none());
        assert!(p.lookup(0, &toks(2)).is_none());
        assert_eq!(p.lookup(0, &toks(1)).map(|(b, _)| b), Some(a));
        // A second block with the same contents is not registered over the first.
        let b = p.allocate().unwrap();
        assert_eq!(p.register(b, 0, &toks(1)), h);
        assert!(p.is_private(b));
        p.release(a);
        assert_eq!(p.used(), 2, "still held by the lookup");
        p.release(a);
        p.release(b);
        assert_eq!((p.used(), p.available()), (0, 4));
    }
}
