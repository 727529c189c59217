//! Training batches of two views, made on worker threads ahead of the training step.
//!
//! Step s of a run reads batch s mod E of epoch ⌊s/E⌋ (E = ⌊N/B⌋ steps per epoch; the last
//! incomplete batch is dropped). The epoch's order is a permutation drawn from
//! (seed, epoch) and each image's two views from (seed, epoch, image index), so any step's batch
//! is a pure function of the step: a resumed run sees exactly the data an uninterrupted run
//! would have seen.

use crate::data::ImageSet;
use super::{AugmentConfig, ViewConfig, ViewParams, finish_host, resize_crop_u8, sample_params};
use crate::rng::{Stream, rng};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

/// One view of a batch, as the loader hands it over.
pub enum View {
    /// Finished on the host: normalised CHW f32, `batch`×3×`size`×`size`.
    Host(Vec<f32>),
    /// u8 crops (CHW, `batch`×3×`size`×`size`) and the parameters of everything that follows the
    /// crop, to be finished by [`crate::augment::ViewPipeline`] on the device.
    Device(Vec<u8>, Vec<ViewParams>),
}

/// The two views of a batch.
pub struct ViewBatch {
    pub step: u64,
    pub batch: usize,
    pub size: usize,
    pub view1: View,
    pub view2: View,
    /// Images that failed to decode, as (name, reason) (each replaced by the next image in the
    /// epoch's order).
    pub failures: Vec<(String, String)>,
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

/// Crop the two views of the images `order[pos·B .. (pos+1)·B]` and draw their parameters; finish
/// them here too unless `on_device`.
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
    on_device: bool,
) -> ViewBatch {
    type Views = ((Vec<u8>, ViewParams), (Vec<u8>, ViewParams), Option<(String, String)>);
    let results: Vec<Views> = (0..batch)
        .into_par_iter()
        .map(|j| {
            let mut slot = pos * batch + j;
            let mut failure = None;
            // An image that fails to decode is replaced by the next one in the order.
            let img = loop {
                match set.rgb(order[slot % order.len()]) {
                    Ok(img) => break img,
                    Err(e) => {
                        failure.get_or_insert_with(|| (set.names[order[slot % order.len()]].clone(), e.to_string()));
                        slot += 1;
                    }
                }
            };
            let idx = order[slot % order.len()];
            let mut r = rng(seed, Stream::Augment, &[epoch, idx as u64]);
            let p1 = sample_params(img.width, img.height, &aug.view1, &mut r);
            let p2 = sample_params(img.width, img.height, &aug.view2, &mut r);
            let i = aug.interpolation;
            ((resize_crop_u8(&img, p1.crop, size, i), p1), (resize_crop_u8(&img, p2.crop, size, i), p2), failure)
        })
        .collect();
    let per = 3 * size * size;
    let (mut crops1, mut crops2) = (Vec::with_capacity(batch * per), Vec::with_capacity(batch * per));
    let (mut params1, mut params2) = (Vec::with_capacity(batch), Vec::with_capacity(batch));
    let mut failures = Vec::new();
    for ((c1, p1), (c2, p2), f) in results {
        crops1.extend(c1);
        crops2.extend(c2);
        params1.push(p1);
        params2.push(p2);
        failures.extend(f);
    }
    let finish = |crops: Vec<u8>, params: Vec<ViewParams>, view: &ViewConfig| {
        if on_device {
            return View::Device(crops, params);
        }
        View::Host(finish_host(&crops, &params, size, view, aug)) // [B, 3, S, S]
    };
    let view1 = finish(crops1, params1, &aug.view1);
    let view2 = finish(crops2, params2, &aug.view2);
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
        on_device: bool,
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
                let b = pool.install(|| make_batch(&set, order, pos, batch, epoch, step, &aug, size, seed, on_device));
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
