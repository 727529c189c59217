//! `byol bench`: throughput of the step, the views and decoding, as JSON lines.

use crate::args::*;
use anyhow::Result;

pub(crate) fn bench_step(args: BenchStepArgs) -> Result<()> {
    let arch: byol::bench::StepArch = args.arch.into();
    let kind: byol::backend::BackendKind = args.backend.into();
    let batch = args
        .batch
        .unwrap_or(arch.default_batch(kind != byol::backend::BackendKind::Flex));
    let setup = arch.setup(batch, kind, args.precision.into(), &args.sets)?;
    let device = kind.device()?;
    let r = byol::bench::bench_step(&setup, args.steps, args.warmup, &device)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

pub(crate) fn bench_augment(args: BenchAugmentArgs) -> Result<()> {
    let kind: byol::backend::BackendKind = args.backend.into();
    let device = kind.device()?;
    let aug = byol::augment::AugmentConfig::default();
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let source = if size <= 32 { size } else { size * 8 / 7 };
        let r = byol::bench::bench_augment(
            &aug,
            size,
            source,
            args.batch,
            args.reps,
            &device,
            kind.name(),
        )?;
        println!("{}", serde_json::to_string(&r)?);
        rows.push(r);
    }
    println!(
        "\n| size | source | batch | threads | backend | batched (views/s) | per-image host (views/s) | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} |",
            r.size,
            r.source,
            r.batch,
            r.threads,
            r.backend,
            r.device_views_per_sec,
            r.host_views_per_sec,
            r.ratio
        );
    }
    Ok(())
}

pub(crate) fn bench_decode(args: BenchDecodeArgs) -> Result<()> {
    let text = args.data.to_string_lossy();
    let (set, buffer) = match text.strip_prefix("shards:") {
        Some(p) => {
            let p = std::path::Path::new(p);
            let train = if p.join("train").is_dir() {
                p.join("train")
            } else {
                p.to_path_buf()
            };
            (
                byol::data::shards::load_set(&train, None, byol::data::MAX_IMAGE_PIXELS)?,
                Some(args.shuffle_buffer),
            )
        }
        None => {
            let root = if args.data.join("train").is_dir() {
                args.data.join("train")
            } else {
                args.data.clone()
            };
            (
                byol::data::imagefolder::load_folder(
                    &root,
                    byol::data::imagefolder::Cache::Off,
                    None,
                    0,
                    0,
                    byol::data::MAX_IMAGE_PIXELS,
                )?,
                None,
            )
        }
    };
    let interpolation = match args.interpolation {
        Interp::Bilinear => byol::augment::Interpolation::Bilinear,
        Interp::Bicubic => byol::augment::Interpolation::Bicubic,
    };
    let aug = byol::augment::AugmentConfig {
        interpolation,
        ..Default::default()
    };
    let r = byol::bench::bench_decode(
        set,
        &aug,
        args.size,
        args.threads,
        args.passes,
        args.batch,
        buffer,
    )?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
