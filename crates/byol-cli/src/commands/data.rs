//! `byol shard` and `byol augment`: the data, converted and looked at.

use crate::args::*;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

pub(crate) fn shard(args: ShardArgs) -> Result<()> {
    let (input, out) = match (&args.verify, &args.input, &args.out) {
        (Some(folder), _, _) => return verify_shards(folder),
        (None, Some(input), Some(out)) => (input, out),
        _ => unreachable!("clap requires --input and --out without --verify"),
    };
    let opts = byol::data::shards::ShardWriteOptions {
        target_bytes: args.shard_mb << 20,
        resize_shorter: args.resize_shorter,
        quality: args.quality,
        seed: args.seed,
    };
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>5} [{bar:30}] {pos}/{len} images ({per_sec}, ETA {eta})",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    let mut current = String::new();
    let written = byol::data::shards::shard_imagefolder(
        input,
        out,
        &opts,
        args.holdout_fraction,
        byol::data::MAX_IMAGE_PIXELS,
        &mut |split, done, total| {
            if current != split {
                current = split.to_string();
                pb.set_prefix(current.clone());
                pb.set_length(total as u64);
                pb.reset();
            }
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    for (name, m) in [("train", &written.train), ("test", &written.test)] {
        let bytes: u64 = m.shards.iter().map(|s| s.bytes).sum();
        println!(
            "{name}: {} images of {} classes in {} shard(s), {:.1} MB, {}",
            m.count,
            m.classes.len(),
            m.shards.len(),
            bytes as f64 / 1e6,
            out.join(name).join(byol::data::shards::MANIFEST).display()
        );
    }
    if !written.skipped.is_empty() {
        println!("skipped {} unreadable image(s):", written.skipped.len());
        for (file, reason) in &written.skipped {
            println!("  {file}: {reason}");
        }
    }
    println!(
        "train on them with: byol pretrain --data shards:{}",
        out.display()
    );
    Ok(())
}

/// `byol shard --verify`: every shard against its manifest; exit 1 when any differs.
pub(crate) fn verify_shards(folder: &std::path::Path) -> Result<()> {
    let checked = byol::data::shards::verify(folder)?;
    let mut bad = 0;
    for v in &checked {
        println!(
            "{}: {} shard(s), {} images, {}",
            v.manifest.display(),
            v.shards,
            v.images,
            if v.problems.is_empty() {
                "all as recorded"
            } else {
                "DIFFERS"
            }
        );
        for p in &v.problems {
            println!("  {}: {}", p.shard.display(), p.problem);
        }
        bad += v.problems.len();
    }
    if bad > 0 {
        eprintln!("{bad} shard(s) differ from their manifests: write them again with `byol shard`");
        std::process::exit(1);
    }
    Ok(())
}

pub(crate) fn augment(args: AugmentArgs) -> Result<()> {
    let cfg = args.config.settings().resolve(&args.config.config)?;
    let device = cfg.backend.device()?;
    let splits = byol::data::load(&cfg.data, cfg.seed)?;
    let size = cfg.data.image_size;
    let scale = args.scale.unwrap_or_else(|| (128 / size).max(1));
    let grid = byol::augment::preview::preview_grid(
        &splits.train,
        &cfg.augment,
        size,
        args.count,
        cfg.seed,
        scale,
        &device,
    )?;
    byol::io::write_rgb_png(&args.out, &grid)?;
    println!(
        "wrote {} rows of (image, view t, view t') at {size} px to {}",
        args.count.min(splits.train.len()),
        args.out.display()
    );
    Ok(())
}
