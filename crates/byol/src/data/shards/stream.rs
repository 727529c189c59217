//! The order of an epoch over a set of shards, and the sequential reader that follows it.

use super::{ShardFile, read_at, read_member};
use crate::data::{ImageSet, Pixels};
use crate::rng::{Stream, rng};
use rand::Rng;
use rand::seq::SliceRandom;
use std::collections::HashMap;
use std::io::BufReader;
use std::sync::Arc;

/// The order in which an epoch reads the samples of `set` (indices into it): the shards in an
/// order drawn from (seed, epoch), each read front to back into a shuffle buffer of `buffer`
/// samples, from which a sample drawn at random (from (seed, epoch)) leaves each time one
/// enters once the buffer is full; the buffer is drained in random order at the end
/// (WebDataset's `shardshuffle` + `shuffle(buffer)`). The order is a pure function of the set,
/// the seed and the epoch, so a resumed run computes it again and starts in the middle.
pub fn epoch_plan(set: &ImageSet, seed: u64, epoch: u64, buffer: usize) -> Vec<usize> {
    // Samples grouped by shard, in file order (the set lists them so).
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut last: Option<*const ShardFile> = None;
    for (i, px) in set.images.iter().enumerate() {
        let Pixels::Member { shard, .. } = px else {
            groups.push(vec![i]);
            last = None;
            continue;
        };
        let id = Arc::as_ptr(shard);
        if last != Some(id) {
            groups.push(Vec::new());
            last = Some(id);
        }
        groups.last_mut().expect("pushed").push(i);
    }
    groups.shuffle(&mut rng(seed, Stream::Shuffle, &[epoch, 1]));
    let mut r = rng(seed, Stream::Shuffle, &[epoch, 2]);
    let buffer = buffer.max(1);
    let mut held: Vec<usize> = Vec::with_capacity(buffer);
    let mut out = Vec::with_capacity(set.len());
    for i in groups.into_iter().flatten() {
        held.push(i);
        if held.len() == buffer {
            let j = r.random_range(0..held.len());
            out.push(held.swap_remove(j));
        }
    }
    held.shuffle(&mut r);
    out.extend(held);
    out
}

/// Reads the samples of a plan in order from `start`, each shard front to back once, keeping
/// in memory only what was read and not yet handed out (at most the plan's shuffle buffer plus
/// one shard's samples). Shards whose samples all come before `start` are not opened.
pub struct ShardReader {
    set: Arc<ImageSet>,
    plan: Arc<Vec<usize>>,
    next: usize,
    /// Shards in the order the plan first needs them, and the next one to read.
    shard_order: Vec<Arc<ShardFile>>,
    next_shard: usize,
    /// For each shard (by the address of its `ShardFile`), its wanted samples in file order.
    wanted: HashMap<usize, Vec<usize>>,
    pending: HashMap<usize, std::result::Result<Vec<u8>, String>>,
}

impl ShardReader {
    pub fn new(set: Arc<ImageSet>, plan: Arc<Vec<usize>>, start: usize) -> Self {
        let mut shard_order = Vec::new();
        let mut wanted: HashMap<usize, Vec<usize>> = HashMap::new();
        for &i in plan.iter().skip(start) {
            if let Pixels::Member { shard, .. } = &set.images[i] {
                let e = wanted.entry(Arc::as_ptr(shard) as usize).or_default();
                if e.is_empty() {
                    shard_order.push(shard.clone());
                }
                e.push(i);
            }
        }
        for v in wanted.values_mut() {
            v.sort_unstable();
        }
        Self {
            set,
            plan,
            next: start,
            shard_order,
            next_shard: 0,
            wanted,
            pending: HashMap::new(),
        }
    }

    /// Samples read and not yet handed out.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// Read the next shard's wanted samples into `pending`.
    fn read_next_shard(&mut self) -> bool {
        let Some(shard) = self.shard_order.get(self.next_shard).cloned() else {
            return false;
        };
        self.next_shard += 1;
        let samples = self
            .wanted
            .remove(&(Arc::as_ptr(&shard) as usize))
            .unwrap_or_default();
        let mut file = match std::fs::File::open(&shard.path) {
            Ok(f) => Some(std::io::BufReader::with_capacity(1 << 20, f)),
            Err(e) => {
                let msg = format!("cannot open shard {}: {e}", shard.path.display());
                tracing::warn!("{msg}");
                for i in samples {
                    self.pending.insert(i, Err(msg.clone()));
                }
                return true;
            }
        };
        let mut truncated: Option<String> = None;
        // Where the reader is: moving forward within its buffer keeps the buffer (a `seek` would
        // drop it and read a whole buffer again for every member).
        let mut pos = 0u64;
        for i in samples {
            let Pixels::Member { offset, len, .. } = self.set.images[i] else {
                unreachable!("wanted samples are members")
            };
            let got = match (&truncated, file.as_mut()) {
                (Some(t), _) => Err(t.clone()),
                (None, Some(f)) => read_forward(f, &shard.path, pos, offset, len)
                    .inspect(|_| pos = offset + len)
                    .map_err(|e| {
                        let t = e.to_string();
                        tracing::warn!("{t}; the rest of this shard is skipped");
                        truncated = Some(t.clone());
                        t
                    }),
                (None, None) => unreachable!("opened above"),
            };
            self.pending.insert(i, got);
        }
        true
    }
}

/// The member at `offset` (`len` bytes) of a reader now at `pos`: skipped forward within the
/// buffer when it lies ahead, sought otherwise.
fn read_forward(
    f: &mut BufReader<std::fs::File>,
    path: &std::path::Path,
    pos: u64,
    offset: u64,
    len: u64,
) -> crate::Result<Vec<u8>> {
    if offset < pos || offset - pos > i64::MAX as u64 {
        return read_at(f, path, offset, len);
    }
    f.seek_relative((offset - pos) as i64)
        .map_err(|e| crate::Error::io(path, e))?;
    read_member(f, path, offset, len)
}

impl Iterator for ShardReader {
    /// (sample index, its encoded bytes or why they could not be read)
    type Item = (usize, std::result::Result<Vec<u8>, String>);

    fn next(&mut self) -> Option<Self::Item> {
        let &i = self.plan.get(self.next)?;
        self.next += 1;
        if !matches!(self.set.images[i], Pixels::Member { .. }) {
            return Some((i, Err("not a shard member".into())));
        }
        loop {
            if let Some(bytes) = self.pending.remove(&i) {
                return Some((i, bytes));
            }
            if !self.read_next_shard() {
                return Some((i, Err("sample not found in its shard".into())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan is a permutation, the same for the same (seed, epoch), different otherwise; with
    /// a buffer of one it reads shards whole in a shuffled order.
    #[test]
    fn epoch_plan_is_a_seeded_permutation() {
        let shards: Vec<Arc<ShardFile>> = (0..5)
            .map(|i| {
                Arc::new(ShardFile {
                    path: format!("s{i}").into(),
                    max_pixels: 1,
                })
            })
            .collect();
        let mut set = ImageSet::empty(vec!["a".into()]);
        for (s, f) in shards.iter().enumerate() {
            for m in 0..7 {
                set.images.push(Pixels::Member {
                    shard: f.clone(),
                    offset: m,
                    len: 1,
                });
                set.labels.push(0);
                set.names.push(format!("{s}:{m}"));
            }
        }
        let a = epoch_plan(&set, 3, 1, 10);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..35).collect::<Vec<_>>());
        assert_eq!(a, epoch_plan(&set, 3, 1, 10));
        assert_ne!(a, epoch_plan(&set, 3, 2, 10));
        assert_ne!(a, epoch_plan(&set, 4, 1, 10));
        let whole = epoch_plan(&set, 3, 1, 1);
        for run in whole.chunks(7) {
            let s = run[0] / 7;
            assert_eq!(run, (s * 7..s * 7 + 7).collect::<Vec<_>>(), "{whole:?}");
        }
        let shard_order: Vec<usize> = whole.chunks(7).map(|r| r[0] / 7).collect();
        assert_ne!(shard_order, [0, 1, 2, 3, 4], "shards are shuffled");
    }
}
