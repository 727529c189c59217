//! Training batches of two views, made on worker threads ahead of the training step.
//!
//! Step s of a run reads batch s mod E of epoch ⌊s/E⌋ (E = ⌊N/B⌋ steps per epoch; the last
//! incomplete batch is dropped). The epoch's order is a permutation drawn from
//! (seed, epoch) and each image's two views from (seed, epoch, image index), so any step's batch
//! is a pure function of the step: a resumed run sees exactly the data an uninterrupted run
//! would have seen.

use super::{
    AugmentConfig, ViewConfig, ViewParams, finish_host, resize_crop_u8_into, sample_params,
};
use crate::data::ImageSet;
use crate::data::shards::{ShardReader, epoch_plan};
use crate::image::Rgb8;
use crate::rng::{Stream, rng};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

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
    /// The label of each image of the batch (used only by the online linear probe).
    pub labels: Vec<usize>,
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

/// Crop the two views of the images `order[pos·B .. (pos+1)·B]` of `spec.set` and draw their
/// parameters; finish them here too unless `spec.on_device`.
pub fn make_batch(
    spec: &LoaderSpec,
    order: &[usize],
    pos: usize,
    epoch: u64,
    step: u64,
) -> ViewBatch {
    let (set, batch) = (&spec.set, spec.batch);
    let views = crop_batch(batch, spec.size, |j, out1, out2| {
        let mut slot = pos * batch + j;
        let mut failure = None;
        // An image that fails to decode is replaced by the next one in the order.
        let img = loop {
            match set.rgb(order[slot % order.len()]) {
                Ok(img) => break img,
                Err(e) => {
                    failure.get_or_insert_with(|| {
                        (set.names[order[slot % order.len()]].clone(), e.to_string())
                    });
                    slot += 1;
                }
            }
        };
        let idx = order[slot % order.len()];
        let (p1, p2) = crop_views_into(&img, idx, epoch, spec, [out1, out2]);
        (p1, p2, failure, set.labels[idx])
    });
    finish_batch(views, batch, step, &spec.aug, spec.size, spec.on_device)
}

/// The two cropped views of image `idx` (CHW u8 of side `spec.size`, written into `out[0]` and
/// `out[1]`) and their parameters, drawn from (`spec.seed`, epoch, idx).
pub fn crop_views_into(
    img: &Rgb8,
    idx: usize,
    epoch: u64,
    spec: &LoaderSpec,
    out: [&mut [u8]; 2],
) -> (ViewParams, ViewParams) {
    let (aug, size) = (&spec.aug, spec.size);
    let [out1, out2] = out;
    let mut r = rng(spec.seed, Stream::Augment, &[epoch, idx as u64]);
    let p1 = sample_params(img.width, img.height, &aug.view1, &mut r);
    let p2 = sample_params(img.width, img.height, &aug.view2, &mut r);
    let i = aug.interpolation;
    resize_crop_u8_into(img, p1.crop, size, i, out1);
    resize_crop_u8_into(img, p2.crop, size, i, out2);
    (p1, p2)
}

/// The crops of a batch: `make(j, out1, out2)` writes image j's two views into its slots of the
/// two [B, 3, S, S] u8 buffers, in parallel, and returns their parameters and any failure.
struct Cropped {
    crops1: Vec<u8>,
    crops2: Vec<u8>,
    params1: Vec<ViewParams>,
    params2: Vec<ViewParams>,
    failures: Vec<(String, String)>,
    labels: Vec<usize>,
}

/// What making one slot of a batch gives: the two views' parameters, a failure if the image
/// first chosen could not be read, and the label of the image used.
type SlotResult = (ViewParams, ViewParams, Option<(String, String)>, usize);

fn crop_batch(
    batch: usize,
    size: usize,
    make: impl Fn(usize, &mut [u8], &mut [u8]) -> SlotResult + Sync,
) -> Cropped {
    let per = 3 * size * size;
    let (mut crops1, mut crops2) = (vec![0u8; batch * per], vec![0u8; batch * per]);
    let results: Vec<SlotResult> = crops1
        .par_chunks_mut(per)
        .zip(crops2.par_chunks_mut(per))
        .enumerate()
        .map(|(j, (o1, o2))| make(j, o1, o2))
        .collect();
    let (mut params1, mut params2, mut failures, mut labels) = (
        Vec::with_capacity(batch),
        Vec::with_capacity(batch),
        Vec::new(),
        Vec::with_capacity(batch),
    );
    for (p1, p2, f, l) in results {
        params1.push(p1);
        params2.push(p2);
        failures.extend(f);
        labels.push(l);
    }
    Cropped {
        crops1,
        crops2,
        params1,
        params2,
        failures,
        labels,
    }
}

/// The two views of a batch, finished on the host unless `on_device`.
fn finish_batch(
    c: Cropped,
    batch: usize,
    step: u64,
    aug: &AugmentConfig,
    size: usize,
    on_device: bool,
) -> ViewBatch {
    let finish = |crops: Vec<u8>, params: Vec<ViewParams>, view: &ViewConfig| {
        if on_device {
            return View::Device(crops, params);
        }
        View::Host(finish_host(&crops, &params, size, view, aug)) // [B, 3, S, S]
    };
    let view1 = finish(c.crops1, c.params1, &aug.view1);
    let view2 = finish(c.crops2, c.params2, &aug.view2);
    ViewBatch {
        step,
        batch,
        size,
        view1,
        view2,
        failures: c.failures,
        labels: c.labels,
    }
}

/// The views of a batch read from shards: `samples` are (index, encoded bytes or the read
/// error) in the plan's order. A sample that cannot be read or decoded is replaced by the next
/// sample of the same batch that can (so that every step still reads the same plan positions);
/// a batch with no readable sample is an error naming the first failure.
pub fn make_batch_from_bytes(
    spec: &LoaderSpec,
    samples: Vec<(usize, std::result::Result<Vec<u8>, String>)>,
    epoch: u64,
    step: u64,
    max_pixels: u64,
) -> crate::Result<ViewBatch> {
    let set = &spec.set;
    let batch = samples.len();
    let decoded: Vec<(usize, std::result::Result<Rgb8, String>)> = samples
        .into_par_iter()
        .map(|(i, bytes)| {
            (
                i,
                bytes.and_then(|b| {
                    crate::data::shards::decode_member(&b, &set.names[i], max_pixels)
                        .map_err(|e| e.to_string())
                }),
            )
        })
        .collect();
    let Some(first_ok) = decoded.iter().position(|(_, d)| d.is_ok()) else {
        let (i, e) = &decoded[0];
        return Err(crate::Error::data(
            &set.names[*i],
            format!(
                "no image of the batch of step {} could be read; the first: {}",
                step + 1,
                e.as_ref().err().map_or("", |s| s.as_str())
            ),
        ));
    };
    let views = crop_batch(batch, spec.size, |j, out1, out2| {
        let failure = decoded[j]
            .1
            .as_ref()
            .err()
            .map(|e| (set.names[decoded[j].0].clone(), e.clone()));
        let k = (j..batch)
            .chain(0..j)
            .find(|&k| decoded[k].1.is_ok())
            .unwrap_or(first_ok);
        let (idx, img) = (decoded[k].0, decoded[k].1.as_ref().expect("found readable"));
        let (p1, p2) = crop_views_into(img, idx, epoch, spec, [out1, out2]);
        (p1, p2, failure, set.labels[idx])
    });
    Ok(finish_batch(
        views,
        batch,
        step,
        &spec.aug,
        spec.size,
        spec.on_device,
    ))
}

/// Produces the batches of steps `start..end` on background threads, `prefetch` ahead.
pub struct Prefetcher {
    rx: Receiver<crate::Result<ViewBatch>>,
    handles: Vec<std::thread::JoinHandle<()>>,
    /// Batches still to come: a producer that stops before is an error, never a short epoch.
    remaining: u64,
}

/// What a [`Prefetcher`] makes: the batches of `batch` images of `set` for steps `start..end`
/// of a run with `seed`, views of side `size` with `aug` (finished on the host unless
/// `on_device`), on `workers` threads, `prefetch` batches ahead of the consumer.
#[derive(Clone)]
pub struct LoaderSpec {
    pub set: Arc<ImageSet>,
    pub aug: AugmentConfig,
    pub batch: usize,
    pub size: usize,
    pub seed: u64,
    pub start: u64,
    pub end: u64,
    pub workers: usize,
    pub prefetch: usize,
    pub on_device: bool,
}

impl Prefetcher {
    /// Batches of a set read by index (decoded images, or one file per image).
    pub fn new(spec: LoaderSpec) -> Self {
        let remaining = spec.end.saturating_sub(spec.start);
        let (tx, rx) = sync_channel(spec.prefetch.max(1));
        let handle = std::thread::spawn(move || {
            let (set, seed) = (&spec.set, spec.seed);
            let Some(pool) = decoding_pool(spec.workers, &tx) else {
                return;
            };
            let spe = steps_per_epoch(set.len(), spec.batch);
            let mut cached: Option<(u64, Vec<usize>)> = None;
            for step in spec.start..spec.end {
                let epoch = step / spe;
                let pos = (step % spe) as usize;
                if cached.as_ref().map(|c| c.0) != Some(epoch) {
                    cached = Some((epoch, epoch_order(set.len(), seed, epoch)));
                }
                let order = &cached.as_ref().expect("set above").1;
                let b = pool.install(|| make_batch(&spec, order, pos, epoch, step));
                if tx.send(Ok(b)).is_err() {
                    return; // the consumer stopped
                }
            }
        });
        Self {
            rx,
            handles: vec![handle],
            remaining,
        }
    }

    /// Batches of a set stored as shards (every image a [`crate::data::Pixels::Member`]), read
    /// in each epoch's [`epoch_plan`] order (`shuffle_buffer`): step s reads plan positions
    /// (s mod E)·B … of epoch ⌊s/E⌋, so a run resumed at any step reads the same samples, and
    /// only the shards it still needs. One thread reads the shards sequentially, `prefetch`
    /// batches of encoded samples ahead of the `workers` threads that decode and crop.
    pub fn from_shards(spec: LoaderSpec, shuffle_buffer: usize, max_pixels: u64) -> Self {
        let (batch, seed, start, end, prefetch) =
            (spec.batch, spec.seed, spec.start, spec.end, spec.prefetch);
        type Encoded = (u64, Vec<(usize, std::result::Result<Vec<u8>, String>)>);
        let (enc_tx, enc_rx) = sync_channel::<Encoded>(prefetch.max(1));
        let spe = steps_per_epoch(spec.set.len(), batch);
        let reader_set = spec.set.clone();
        let reader = std::thread::spawn(move || {
            let mut step = start;
            while step < end {
                let epoch = step / spe;
                let plan = Arc::new(epoch_plan(&reader_set, seed, epoch, shuffle_buffer));
                let first = (step % spe) as usize * batch;
                let mut samples = ShardReader::new(reader_set.clone(), plan, first);
                while step < end && step / spe == epoch {
                    let b: Vec<_> = samples.by_ref().take(batch).collect();
                    if enc_tx.send((step, b)).is_err() {
                        return; // the consumer stopped
                    }
                    step += 1;
                }
            }
        });
        let (tx, rx) = sync_channel(prefetch.max(1));
        let decoder = std::thread::spawn(move || {
            let Some(pool) = decoding_pool(spec.workers, &tx) else {
                return;
            };
            for (step, samples) in enc_rx {
                let epoch = step / spe;
                let b =
                    pool.install(|| make_batch_from_bytes(&spec, samples, epoch, step, max_pixels));
                let failed = b.is_err();
                if tx.send(b).is_err() || failed {
                    return;
                }
            }
        });
        Self {
            rx,
            handles: vec![reader, decoder],
            remaining: end.saturating_sub(start),
        }
    }
}

/// The pool of `workers` decoding threads, or `None` after sending the error that it could not
/// be made.
fn decoding_pool(
    workers: usize,
    tx: &SyncSender<crate::Result<ViewBatch>>,
) -> Option<rayon::ThreadPool> {
    match rayon::ThreadPoolBuilder::new().num_threads(workers).build() {
        Ok(pool) => Some(pool),
        Err(e) => {
            let _ = tx.send(Err(crate::Error::Loader(format!(
                "cannot start {workers} decoding threads: {e}"
            ))));
            None
        }
    }
}

/// The batches in step order; after an error, nothing more.
impl Iterator for Prefetcher {
    type Item = crate::Result<ViewBatch>;

    /// The next batch, `None` when the range is exhausted, or the error that stopped the loader:
    /// one a producer sent, or that a producer thread ended early (a panic, with its message).
    fn next(&mut self) -> Option<crate::Result<ViewBatch>> {
        if self.remaining == 0 {
            return None;
        }
        match self.rx.recv() {
            Ok(b) => {
                self.remaining = if b.is_ok() { self.remaining - 1 } else { 0 };
                Some(b)
            }
            Err(_) => {
                let missing = std::mem::take(&mut self.remaining);
                let why = self
                    .handles
                    .drain(..)
                    .filter_map(|h| h.join().err())
                    .map(|p| crate::error::panic_message(&*p))
                    .next()
                    .map_or_else(
                        || "a producer thread ended early".to_string(),
                        |m| format!("a decoding thread panicked: {m}"),
                    );
                Some(Err(crate::Error::Loader(format!(
                    "{missing} batch(es) were never made: {why}"
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{SyntheticConfig, synthetic};

    /// A producer thread that panics ends the loader with an error that names the panic, never
    /// with a short epoch (`byol bench decode --size 0` once reported a rate from one); a loader
    /// that ends normally ends with `None` after exactly its batches.
    #[test]
    fn a_panicking_producer_is_an_error_not_a_short_epoch() {
        let set = Arc::new(
            synthetic::generate(
                &SyntheticConfig {
                    train_per_class: 2,
                    test_per_class: 1,
                },
                16,
                0,
            )
            .train,
        );
        let spec = |size| LoaderSpec {
            set: set.clone(),
            aug: AugmentConfig::default(),
            batch: 4,
            size,
            seed: 0,
            start: 0,
            end: 3,
            workers: 1,
            prefetch: 1,
            on_device: true,
        };
        let mut ok = Prefetcher::new(spec(8));
        for step in 0..3 {
            assert_eq!(ok.next().expect("a batch").expect("no error").step, step);
        }
        assert!(ok.next().is_none());
        let mut broken = Prefetcher::new(spec(0));
        let e = broken
            .next()
            .expect("an error, not the end")
            .err()
            .expect("an error")
            .to_string();
        assert!(
            e.contains("3 batch(es) were never made") && e.contains("panicked"),
            "{e}"
        );
        assert!(broken.next().is_none(), "one error, then the end");
    }
}
