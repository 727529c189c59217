//! Training batches of two views, made on worker threads ahead of the training step.
//!
//! Step s of a run reads batch s mod E of epoch ⌊s/E⌋ (E = ⌊N/B⌋ steps per epoch; the last
//! incomplete batch is dropped). The epoch's order is a permutation drawn from
//! (seed, epoch) and each image's two views from (seed, epoch, image index), so any step's batch
//! is a pure function of the step: a resumed run sees exactly the data an uninterrupted run
//! would have seen.

use super::ImageSet;
use crate::augment::{AugmentConfig, make_view};
use crate::rng::{Stream, rng};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

/// Two views of a batch: CHW f32, normalised, `batch`×3×`size`×`size` each.
pub struct ViewBatch {
    pub step: u64,
    pub batch: usize,
    pub size: usize,
    pub view1: Vec<f32>,
    pub view2: Vec<f32>,
    /// Images that failed to decode (replaced by the next image in the epoch's order).
    pub failures: Vec<String>,
}

/// Steps in one epoch.
pub fn steps_per_epoch(n: usize, batch: usize) -> u64 {
    (n / batch) as u64
}

/// The order of the images in `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng(seed, Stream::Shuffle, &[epoch]));
    order
}

/// Build the two views of the images `order[pos·B .. (pos+1)·B]`.
pub fn make_batch(
    set: &ImageSet,
    order: &[usize],
    pos: usize,
    batch: usize,
    epoch: u64,
    step: u64,
    aug: &AugmentConfig,
    size: usize,
    seed: u64,
) -> ViewBatch {
    let per = 3 * size * size;
    let results: Vec<(Vec<f32>, Vec<f32>, Option<String>)> = (0..batch)
        .into_par_iter()
        .map(|j| {
            let mut slot = pos * batch + j;
            let mut failure = None;
            // An image that fails to decode is replaced by the next one in the order.
            let img = loop {
                match set.rgb(order[slot % order.len()]) {
                    Ok(img) => break img,
                    Err(e) => {
                        failure.get_or_insert_with(|| e.to_string());
                        slot += 1;
                    }
                }
            };
            let idx = order[slot % order.len()];
            let mut r = rng(seed, Stream::Augment, &[epoch, idx as u64]);
            let v1 = make_view(&img, size, &aug.view1, (&aug.mean, &aug.std), &mut r);
            let v2 = make_view(&img, size, &aug.view2, (&aug.mean, &aug.std), &mut r);
            (v1, v2, failure)
        })
        .collect();
    let mut view1 = Vec::with_capacity(batch * per);
    let mut view2 = Vec::with_capacity(batch * per);
    let mut failures = Vec::new();
    for (a, b, f) in results {
        view1.extend(a);
        view2.extend(b);
        failures.extend(f);
    }
    ViewBatch { step, batch, size, view1, view2, failures }
}

/// Produces the batches of steps `start..end` on a background thread, `prefetch` ahead.
pub struct Prefetcher {
    rx: Receiver<ViewBatch>,
    _handle: std::thread::JoinHandle<()>,
}

impl Prefetcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        set: Arc<ImageSet>,
        aug: AugmentConfig,
        batch: usize,
        size: usize,
        seed: u64,
        start: u64,
        end: u64,
        workers: usize,
        prefetch: usize,
    ) -> Self {
        let (tx, rx) = sync_channel(prefetch.max(1));
        let handle = std::thread::spawn(move || {
            let pool = match rayon::ThreadPoolBuilder::new().num_threads(workers).build() {
                Ok(p) => p,
                Err(_) => return,
            };
            let spe = steps_per_epoch(set.len(), batch);
            let mut cached: Option<(u64, Vec<usize>)> = None;
            for step in start..end {
                let epoch = step / spe;
                let pos = (step % spe) as usize;
                if cached.as_ref().map(|c| c.0) != Some(epoch) {
                    cached = Some((epoch, epoch_order(set.len(), seed, epoch)));
                }
                let order = &cached.as_ref().expect("set above").1;
                let b = pool.install(|| make_batch(&set, order, pos, batch, epoch, step, &aug, size, seed));
                if tx.send(b).is_err() {
                    return; // the consumer stopped
                }
            }
        });
        Self { rx, _handle: handle }
    }

    /// The next batch, or `None` when the range is exhausted.
    pub fn next(&self) -> Option<ViewBatch> {
        self.rx.recv().ok()
    }
}
