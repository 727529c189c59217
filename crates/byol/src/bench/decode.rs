//! Input throughput of the training loader when the view operations run on the device: read
//! each encoded image (a file, or a member of a streamed shard), decode it, make the two random
//! resized crops of the paper's views and lay them out as a batch, images per second on a
//! given number of decoding threads. `bench/decode.sh` runs it beside PyTorch's `DataLoader`
//! on the same files.

use crate::augment::AugmentConfig;
use crate::augment::loader::{LoaderSpec, Prefetcher, steps_per_epoch};
use crate::data::ImageSet;
use crate::{Error, Result};
use serde::Serialize;
use std::sync::Arc;

/// One line of `byol bench decode`.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeBench {
    pub images: usize,
    pub threads: usize,
    /// Side of the two crops.
    pub size: usize,
    /// Source pixels (width × height) of the first image.
    pub first_image_pixels: f64,
    /// Timed epochs (after one untimed epoch that also fills the page cache).
    pub passes: usize,
    /// Median seconds of a pass.
    pub seconds: f64,
    pub images_per_sec: f64,
    pub images_per_sec_per_thread: f64,
}

/// Time `passes` epochs of the training loader over `set` (an ImageFolder opened without the
/// cache, or shards, streamed as in training when `shuffle_buffer` is given) on `threads`
/// decoding threads: batches of `batch` images read, decoded, and cropped twice to `size`
/// (interpolation and crop ranges from `aug`), laid out as the two u8 views the device
/// pipeline takes. One untimed epoch first (it also fills the page cache).
pub fn bench_decode(
    set: ImageSet,
    aug: &AugmentConfig,
    size: usize,
    threads: usize,
    passes: usize,
    batch: usize,
    shuffle_buffer: Option<usize>,
) -> Result<DecodeBench> {
    if batch == 0 || batch > set.len() {
        return Err(Error::config(
            "batch",
            format!("{batch} must be in 1..={}", set.len()),
        ));
    }
    let spe = steps_per_epoch(set.len(), batch);
    let pixels = {
        let img = set.rgb(0)?;
        (img.width * img.height) as f64
    };
    let set = Arc::new(set);
    let epoch = |e: u64| -> Result<()> {
        let (start, end) = (e * spe, (e + 1) * spe);
        let spec = LoaderSpec {
            set: set.clone(),
            aug: aug.clone(),
            batch,
            size,
            seed: 0,
            start,
            end,
            workers: threads,
            prefetch: 2,
            on_device: true,
        };
        let p = match shuffle_buffer {
            Some(buf) => Prefetcher::from_shards(spec, buf, u64::MAX),
            None => Prefetcher::new(spec),
        };
        for b in p {
            std::hint::black_box(b?);
        }
        Ok(())
    };
    epoch(0)?;
    let mut times: Vec<f64> = Vec::new();
    for e in 1..=passes.max(1) as u64 {
        let t = std::time::Instant::now();
        epoch(e)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    let images = spe as usize * batch;
    let ips = images as f64 / seconds;
    Ok(DecodeBench {
        images,
        threads,
        size,
        first_image_pixels: pixels,
        passes: times.len(),
        seconds,
        images_per_sec: ips,
        images_per_sec_per_thread: ips / threads as f64,
    })
}
