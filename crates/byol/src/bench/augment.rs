//! Views per second of the view pipeline: the batched device pipeline (host crop +
//! [`ViewPipeline`]) against the same pipeline done per image on the host ([`make_view`]), on the
//! same images, in the same process.

use super::median_seconds;
use crate::augment::{AugmentConfig, ViewPipeline, make_view, resize_crop_u8, sample_params};
use crate::data::synthetic::render;
use crate::image::Rgb8;
use crate::rng::{Stream, rng};
use crate::{Error, Result};
use burn::tensor::Device;
use rayon::prelude::*;
use serde::Serialize;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// One line of `byol bench augment`.
#[derive(Debug, Clone, Serialize)]
pub struct AugmentBench {
    pub backend: String,
    /// Training size of a view (side in pixels).
    pub size: usize,
    /// Side of the in-memory source images the crops are taken from.
    pub source: usize,
    pub batch: usize,
    pub threads: usize,
    /// Both views of the paper (t and t'), per image per step: 2·batch views.
    pub views_per_step: usize,
    /// Ours: crops on the host threads, the rest batched on the device.
    pub device_views_per_sec: f64,
    /// Baseline: every operation per image on the host threads.
    pub host_views_per_sec: f64,
    /// device / host.
    pub ratio: f64,
}

/// Time both pipelines on `batch` rendered images of side `source`, producing views of side
/// `size`, median of `reps` batches after 2 warm-up batches. A failure of the device (a buffer it
/// cannot allocate, a kernel it cannot run) is an error naming the backend and the size.
pub fn bench_augment(
    aug: &AugmentConfig,
    size: usize,
    source: usize,
    batch: usize,
    reps: usize,
    device: &Device,
    backend: &str,
) -> Result<AugmentBench> {
    let images: Vec<Rgb8> = (0..batch)
        .map(|i| render(i % 10, source, &mut rng(0, Stream::Synthetic, &[i as u64])))
        .collect();
    let pipes = [
        ViewPipeline::new(&aug.view1, aug, size, device),
        ViewPipeline::new(&aug.view2, aug, size, device),
    ];
    let views = [&aug.view1, &aug.view2];
    let mut step = 0u64;
    let mut failure: Option<String> = None;
    let timed = catch_unwind(AssertUnwindSafe(|| {
        median_seconds(2, reps, || {
            if failure.is_some() {
                return;
            }
            step += 1;
            for (v, (view, pipe)) in views.iter().zip(&pipes).enumerate() {
                let (crops, params): (Vec<Vec<u8>>, Vec<_>) = images
                    .par_iter()
                    .enumerate()
                    .map(|(i, img)| {
                        let mut r = rng(1, Stream::Augment, &[step, i as u64, v as u64]);
                        let p = sample_params(img.width, img.height, view, &mut r);
                        (resize_crop_u8(img, p.crop, size, aug.interpolation), p)
                    })
                    .unzip();
                let out = pipe.apply(crops.concat(), &params);
                // Wait for the device: read one value back.
                if let Err(e) = out.slice([0..1, 0..1, 0..1, 0..1]).try_into_data() {
                    failure = Some(format!("{e:?}"));
                    return;
                }
            }
        })
    }));
    let device_t = match (timed, failure) {
        (Ok(t), None) => t,
        (Ok(_), Some(why)) => return Err(device_failure(backend, size, why)),
        (Err(p), _) => {
            return Err(device_failure(
                backend,
                size,
                crate::error::panic_message(p.as_ref()),
            ));
        }
    };
    let host_t = host_seconds(&images, aug, size, reps, &mut step);
    let n = 2 * batch;
    Ok(AugmentBench {
        backend: backend.to_string(),
        size,
        source,
        batch,
        threads: rayon::current_num_threads(),
        views_per_step: n,
        device_views_per_sec: n as f64 / device_t,
        host_views_per_sec: n as f64 / host_t,
        ratio: host_t / device_t,
    })
}

/// The host pipeline's median seconds per batch of both views of `images` (the baseline), its
/// random streams counted on from `step`.
fn host_seconds(
    images: &[Rgb8],
    aug: &AugmentConfig,
    size: usize,
    reps: usize,
    step: &mut u64,
) -> f64 {
    let views = [&aug.view1, &aug.view2];
    median_seconds(2, reps, || {
        *step += 1;
        for (v, view) in views.iter().enumerate() {
            let out: Vec<Vec<f32>> = images
                .par_iter()
                .enumerate()
                .map(|(i, img)| {
                    make_view(
                        img,
                        size,
                        view,
                        aug,
                        &mut rng(1, Stream::Augment, &[*step, i as u64, v as u64]),
                    )
                })
                .collect();
            std::hint::black_box(out);
        }
    })
}

fn device_failure(backend: &str, size: usize, why: String) -> Error {
    Error::Backend {
        name: backend.into(),
        message: format!("the view pipeline at {size} px failed on the device: {why}"),
    }
}
