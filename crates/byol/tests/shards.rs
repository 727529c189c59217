//! Datasets as tar shards: an ImageFolder written as shards reads back as the same images and
//! labels; the training order is a function of the seed and the epoch, and a run resumed in the
//! middle of an epoch continues it; corrupt members, truncated and missing shards.

use byol::ExperimentConfig;
use byol::augment::loader::{LoaderSpec, Prefetcher, View};
use byol::data::imagefolder::{Cache, load_folder};
use byol::data::shards::{
    self, ShardReader, ShardWriteOptions, epoch_plan, load_set, shard_imagefolder,
};
use byol::data::{ImageSet, Pixels};
use byol::train::{RunOptions, checkpoint, pretrain};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod common;
use common::{Quiet, tiny};

const MAX_PX: u64 = 100_000_000;

fn tmp(name: &str) -> PathBuf {
    let d = common::tmp(&format!("shards-{name}"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `root/{train,test}/<class>/…`: 3 classes, `per_class` training and 4 test images each, every
/// image different; one in five a JPEG, the rest PNGs; sizes vary around `side`.
fn image_folder(root: &Path, per_class: u32, side: u32) {
    for (split, n) in [("train", per_class), ("test", 4)] {
        for c in 0..3u32 {
            let dir = root.join(split).join(format!("class{c}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let (w, h) = (side + i % 5, side - 2 + (i % 3));
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    image::Rgb([
                        (x * 9 + i * 13) as u8,
                        (y * 7 + c * 80) as u8,
                        ((x ^ y) + i) as u8,
                    ])
                });
                let ext = if i % 5 == 0 { "jpg" } else { "png" };
                img.save(dir.join(format!("{split}{i}.{ext}"))).unwrap();
            }
        }
    }
}

fn write(root: &Path, out: &Path, target_bytes: u64, resize: Option<u32>) -> shards::ShardedSplits {
    let opts = ShardWriteOptions {
        target_bytes,
        resize_shorter: resize,
        quality: 90,
        seed: 0,
    };
    shard_imagefolder(root, out, &opts, 0.1, MAX_PX, &mut |_, _, _| {}).unwrap()
}

/// (label, width, height, pixels) of every image, sorted: the content of a set, in any order.
fn content(set: &ImageSet) -> Vec<(usize, usize, usize, Vec<u8>)> {
    let mut v: Vec<_> = (0..set.len())
        .map(|i| {
            let img = set.rgb(i).unwrap();
            (set.labels[i], img.width, img.height, img.data.clone())
        })
        .collect();
    v.sort();
    v
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn imagefolder_to_shards_and_back_gives_the_same_images_and_labels() {
    let d = tmp("roundtrip");
    image_folder(&d.join("folder"), 20, 14);
    // About 4 samples per shard: many shards.
    let written = write(&d.join("folder"), &d.join("out"), 12_000, None);
    assert!(written.skipped.is_empty());
    assert!(
        written.train.shards.len() >= 5,
        "{} shards",
        written.train.shards.len()
    );
    for (split, m) in [("train", &written.train), ("test", &written.test)] {
        let folder = load_folder(
            &d.join("folder").join(split),
            Cache::InMemory {
                limit_bytes: u64::MAX,
            },
            None,
            0,
            0,
            MAX_PX,
        )
        .unwrap();
        let sharded = load_set(&d.join("out").join(split), None, MAX_PX).unwrap();
        assert_eq!(sharded.classes, folder.classes);
        assert_eq!(sharded.len(), folder.len());
        assert_eq!(m.count, folder.len());
        assert_eq!(
            content(&sharded),
            content(&folder),
            "{split}: the same images with the same labels"
        );
        // The manifest describes the files as they are.
        assert_eq!(m.shards.iter().map(|s| s.count).sum::<usize>(), m.count);
        for s in &m.shards {
            let path = d.join("out").join(split).join(&s.name);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), s.bytes);
            assert_eq!(sha256_hex(&path), s.sha256, "{}", s.name);
        }
        // Samples are written in a shuffled order, so that a shard holds several classes.
        let first: Vec<usize> = sharded.labels.iter().take(12).copied().collect();
        assert!(first.iter().any(|&l| l != first[0]), "{first:?}");
    }
    // No temporary file is left, and a second conversion into the same folder is refused.
    let leftovers: Vec<_> = std::fs::read_dir(d.join("out/train"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty());
    let opts = ShardWriteOptions {
        target_bytes: 12_000,
        resize_shorter: None,
        quality: 90,
        seed: 0,
    };
    let e = shard_imagefolder(
        &d.join("folder"),
        &d.join("out"),
        &opts,
        0.1,
        MAX_PX,
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("manifest.json") && e.contains("already exist"),
        "{e}"
    );

    // With a resize, the shorter side is the one asked for and the aspect ratio is kept.
    let small = write(&d.join("folder"), &d.join("small"), 1 << 20, Some(8));
    assert_eq!(small.train.resize_shorter, Some(8));
    let set = load_set(&d.join("small").join("train"), None, MAX_PX).unwrap();
    for i in 0..set.len() {
        let img = set.rgb(i).unwrap();
        assert_eq!(img.width.min(img.height), 8, "{}", set.names[i]);
        assert!(
            img.width >= img.height,
            "images are wider than high, so are their resized versions"
        );
    }
}

/// The training order is drawn from (seed, epoch); the loader started at any step of an epoch
/// yields the batches an uninterrupted loader yields from that step on.
#[test]
fn shard_order_is_seeded_and_a_mid_epoch_start_continues_it() {
    let d = tmp("order");
    image_folder(&d.join("folder"), 20, 14);
    write(&d.join("folder"), &d.join("out"), 12_000, None);
    let set = Arc::new(load_set(&d.join("out").join("train"), None, MAX_PX).unwrap());
    assert_eq!(set.len(), 60);
    let cfg = ExperimentConfig::load("small-cpu", &[]).unwrap();
    let (batch, size, buffer) = (8usize, 8usize, 10usize);
    // 7 steps per epoch; steps 0..14 are two epochs.
    let batches = |seed: u64, start: u64| -> Vec<Vec<f32>> {
        let spec = LoaderSpec {
            set: set.clone(),
            aug: cfg.augment.clone(),
            batch,
            size,
            seed,
            start,
            end: 14,
            workers: 1,
            prefetch: 2,
            on_device: false,
        };
        Prefetcher::from_shards(spec, buffer, MAX_PX)
            .map(|b| match b.unwrap().view1 {
                View::Host(v) => v,
                View::Device(..) => unreachable!("host views"),
            })
            .collect()
    };
    let full = batches(5, 0);
    assert_eq!(full.len(), 14);
    assert_eq!(full, batches(5, 0), "the same seed gives the same batches");
    assert_ne!(full, batches(6, 0), "another seed gives other batches");
    for start in [3, 7, 10] {
        assert_eq!(
            batches(5, start),
            full[start as usize..].to_vec(),
            "started at step {start}"
        );
    }
    // Each epoch's plan is a permutation of the set, the two epochs differ.
    let (e0, e1) = (
        epoch_plan(&set, 5, 0, buffer),
        epoch_plan(&set, 5, 1, buffer),
    );
    assert_ne!(e0, e1);
    let mut sorted = e0.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..60).collect::<Vec<_>>());
    // The reader hands out the plan's samples in order and holds at most the buffer and one
    // shard's samples in memory.
    let per_shard = shards::load_set(&d.join("out").join("train"), None, MAX_PX)
        .unwrap()
        .images
        .iter()
        .fold(
            std::collections::HashMap::<String, usize>::new(),
            |mut m, p| {
                if let Pixels::Member { shard, .. } = p {
                    *m.entry(shard.path.display().to_string()).or_default() += 1;
                }
                m
            },
        );
    let largest = per_shard.values().copied().max().unwrap();
    let plan = Arc::new(e0);
    let mut reader = ShardReader::new(set.clone(), plan.clone(), 0);
    let mut most = 0;
    for (p, &want) in plan.iter().enumerate() {
        let (got, bytes) = reader.next().unwrap();
        assert_eq!(got, want, "position {p}");
        assert!(bytes.is_ok());
        most = most.max(reader.held());
    }
    assert!(reader.next().is_none());
    assert!(
        most <= buffer + largest,
        "held {most} samples, buffer {buffer}, largest shard {largest}"
    );
}

fn tiny_shards(path: &Path, extra: &[&str]) -> ExperimentConfig {
    let path = format!("data.path={:?}", path.display().to_string());
    let mut o = vec![
        "data.source=\"shards\"",
        "data.shuffle-buffer=10",
        "train.log-every=1",
        path.as_str(),
    ];
    o.extend(extra);
    tiny(&o)
}

fn losses(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| l.split(",\"images_per_sec\"").next().unwrap().to_string())
        .collect()
}

/// N steps = N/2 + resume + N/2 on shards, the interruption in the middle of an epoch.
#[test]
fn pretraining_on_shards_resumes_mid_epoch_bit_identically() {
    let d = tmp("resume");
    image_folder(&d.join("folder"), 20, 14);
    write(&d.join("folder"), &d.join("out"), 12_000, None);
    let cfg = tiny_shards(&d.join("out"), &[]);
    let opts = RunOptions {
        resume: false,
        compare_random: false,
        max_steps: None,
        ..Default::default()
    };
    // 60 images, batch 16: 3 steps per epoch, 6 steps; stop at step 4, in the second epoch.
    let r = pretrain(&cfg, &d.join("full"), &opts, &mut Quiet).unwrap();
    assert_eq!((r.steps, r.train_images, r.test_images), (6, 60, 12));
    assert!(r.knn.is_some());
    pretrain(
        &cfg,
        &d.join("half"),
        &RunOptions {
            max_steps: Some(4),
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    pretrain(
        &cfg,
        &d.join("half"),
        &RunOptions {
            resume: true,
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(losses(&d.join("full")), losses(&d.join("half")));
    assert_eq!(losses(&d.join("full")).len(), 6);
    let device = burn::tensor::Device::flex();
    let (a, _) = checkpoint::read_latest(&d.join("full")).unwrap();
    let (b, _) = checkpoint::read_latest(&d.join("half")).unwrap();
    let (oa, ob) = (
        byol::model::params::collect(&a.online(&device).unwrap()),
        byol::model::params::collect(&b.online(&device).unwrap()),
    );
    for (p, t) in &oa {
        let (x, y): (Vec<f32>, Vec<f32>) = (
            t.flat.clone().into_data().try_into_vec().unwrap(),
            ob[p].flat.clone().into_data().try_into_vec().unwrap(),
        );
        assert_eq!(x, y, "{p}");
    }
}

/// A member that does not decode is reported by shard and key and skipped; a shard cut short
/// keeps its complete samples and the run goes on; a missing shard is an error at the start.
#[test]
fn corrupt_members_truncated_and_missing_shards() {
    let d = tmp("faults");
    image_folder(&d.join("folder"), 20, 14);
    write(&d.join("folder"), &d.join("out"), 12_000, None);
    let train = d.join("out").join("train");
    let shard0 = train.join("shard-000000.tar");
    let set = load_set(&train, None, MAX_PX).unwrap();
    let Pixels::Member { offset, len, .. } = &set.images[0] else {
        panic!("a member")
    };
    let mut bytes = std::fs::read(&shard0).unwrap();
    for b in &mut bytes[*offset as usize..(*offset + *len) as usize] {
        *b = 0x5A;
    }
    std::fs::write(&shard0, &bytes).unwrap();
    let shard1 = train.join("shard-000001.tar");
    let (samples1, _) = shards::scan_shard(&shard1).unwrap();
    let full1 = std::fs::read(&shard1).unwrap();
    // Cut in the middle of the second image's data.
    std::fs::write(
        &shard1,
        &full1[..(samples1[1].offset + samples1[1].len / 2) as usize],
    )
    .unwrap();

    let cut = load_set(&train, None, MAX_PX).unwrap();
    assert_eq!(
        cut.len(),
        60 - (samples1.len() - 1),
        "the truncated shard keeps its first sample"
    );
    let warning = cut
        .skipped
        .iter()
        .find(|(p, _)| p == &shard1)
        .map(|(_, w)| w.clone())
        .expect("the truncated shard is reported");
    let lost = samples1.len() - 1;
    assert!(
        warning.contains("ends early after 1 image")
            && warning.contains(&format!("{lost} image(s) lost")),
        "{warning}"
    );
    assert_eq!(
        cut.lost, lost,
        "the images lost are counted from the manifest"
    );

    // `verify` finds both: the rewritten member by its SHA-256 (its size is unchanged, so the
    // open-time check cannot), the cut shard by size, digest and count; the test split is intact.
    let checked = shards::verify(&d.join("out")).unwrap();
    assert_eq!(checked.len(), 2);
    let names: Vec<&Path> = checked[0]
        .problems
        .iter()
        .map(|p| p.shard.as_path())
        .collect();
    assert_eq!(
        names,
        [shard0.as_path(), shard1.as_path()],
        "{:?}",
        checked[0].problems
    );
    assert!(
        checked[0].problems[0].problem.starts_with("SHA-256"),
        "{:?}",
        checked[0].problems[0]
    );
    let p1 = &checked[0].problems[1].problem;
    assert!(
        p1.contains("bytes, the manifest records")
            && p1.contains("SHA-256")
            && p1.contains(&format!(
                "1 image(s), the manifest records {}",
                samples1.len()
            )),
        "{p1}"
    );
    assert!(checked[1].problems.is_empty(), "{:?}", checked[1].problems);

    let cfg = tiny_shards(&d.join("out"), &[]);
    let run = d.join("run");
    let opts = RunOptions {
        resume: false,
        compare_random: false,
        max_steps: None,
        ..Default::default()
    };
    let r = pretrain(&cfg, &run, &opts, &mut Quiet).unwrap();
    assert_eq!(r.steps, 2 * (cut.len() as u64 / 16));
    assert_eq!(r.lost_images, lost);
    let skipped = std::fs::read_to_string(run.join("skipped.json")).unwrap();
    let name = format!("{}:00000000", shard0.display());
    assert!(
        skipped.contains(&name),
        "the corrupt member is named: {skipped}"
    );
    assert!(
        skipped.contains(&format!("{}", shard1.display())) && skipped.contains("ends early"),
        "{skipped}"
    );

    // A range naming a shard that does not exist is refused before anything runs.
    let pattern = train.join("shard-{000000..000099}.tar");
    let e = load_set(&pattern, None, MAX_PX).unwrap_err().to_string();
    assert!(
        e.contains("shard-0000") && e.contains("does not exist"),
        "{e}"
    );
    let test_path = format!(
        "data.test-path={:?}",
        d.join("nowhere/*.tar").display().to_string()
    );
    let cfg = tiny_shards(&train, &[&test_path]);
    let e = pretrain(&cfg, &d.join("run2"), &opts, &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nowhere") && e.contains("no shard matches"),
        "{e}"
    );
}
