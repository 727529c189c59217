//! The tests of `imagefolder`.

use super::*;

const LIMIT: u64 = 100_000_000;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("byol-if-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `train/` with `val/` (and no `test/`) is read as the two splits, not as classes.
#[test]
fn val_is_the_test_split_when_there_is_no_test() {
    let d = tmpdir("val");
    for (split, class) in [("train", "a"), ("train", "b"), ("val", "a"), ("val", "b")] {
        std::fs::create_dir_all(d.join(split).join(class)).unwrap();
        image::RgbImage::from_fn(4, 4, |_, _| image::Rgb([1, 2, 3]))
            .save(d.join(split).join(class).join("x.png"))
            .unwrap();
    }
    let cfg = crate::config::ExperimentConfig::load("small-cpu", &[])
        .unwrap()
        .data;
    let s = load_splits(&d, &cfg, 0.1, 0).unwrap();
    assert_eq!(
        (s.train.len(), s.test.len(), s.train.classes.clone()),
        (2, 2, vec!["a".to_string(), "b".to_string()])
    );
    assert!(
        s.test.names.iter().all(|n| n.contains("/val/")),
        "{:?}",
        s.test.names
    );
}

/// `train/<class>/…` with no test split beside it is told as such, with the two ways on.
#[test]
fn a_train_folder_alone_gets_a_hint() {
    let d = tmpdir("train-only");
    std::fs::create_dir_all(d.join("train").join("a")).unwrap();
    image::RgbImage::from_fn(4, 4, |_, _| image::Rgb([1, 2, 3]))
        .save(d.join("train").join("a").join("x.png"))
        .unwrap();
    let cfg = crate::config::ExperimentConfig::load("small-cpu", &[])
        .unwrap()
        .data;
    let e = load_splits(&d, &cfg, 0.1, 0)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("no test/ (or val/)")
            && e.contains(&format!("--data {}", d.join("train").display())),
        "{e}"
    );
}

#[test]
fn missing_and_empty_folders_are_clear_errors() {
    let e = load_folder(
        Path::new("/nonexistent/byol"),
        Cache::Off,
        None,
        0,
        0,
        LIMIT,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("/nonexistent/byol") && e.contains("does not exist"),
        "{e}"
    );
    let d = tmpdir("empty");
    let e = load_folder(&d, Cache::Off, None, 0, 0, LIMIT)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no images found"), "{e}");
}

#[test]
fn corrupt_images_are_skipped_and_counted() {
    let d = tmpdir("corrupt");
    for class in ["a", "b"] {
        std::fs::create_dir_all(d.join(class)).unwrap();
        for i in 0..3 {
            let img = image::RgbImage::from_pixel(5, 4, image::Rgb([i * 40, 10, 200]));
            img.save(d.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(d.join("a").join("bad.jpg"), b"not an image").unwrap();
    std::fs::write(d.join("b").join("empty.png"), b"").unwrap();
    let gray = image::GrayImage::from_pixel(3, 3, image::Luma([77]));
    gray.save(d.join("b").join("gray.png")).unwrap();
    let unlimited = Cache::InMemory {
        limit_bytes: u64::MAX,
    };
    for cache in [unlimited, Cache::Off] {
        let set = load_folder(&d, cache, None, 0, 0, LIMIT).unwrap();
        assert_eq!(set.len(), 7);
        assert_eq!(set.skipped.len(), 2);
        assert_eq!(set.classes, vec!["a", "b"]);
    }
    let set = load_folder(&d, unlimited, None, 0, 0, LIMIT).unwrap();
    let g = set
        .images
        .iter()
        .filter_map(|p| {
            if let Pixels::Memory(m) = p {
                Some(m)
            } else {
                None
            }
        })
        .find(|m| m.width == 3)
        .unwrap();
    assert_eq!(g.data[..3], [77, 77, 77]);
}

/// What the layout leaves out is said, not dropped in silence: an image beside the class
/// folders, a class folder without images, files that are not images.
#[test]
fn what_the_layout_leaves_out_is_listed() {
    let d = tmpdir("left-out");
    for class in ["a", "b"] {
        std::fs::create_dir_all(d.join(class)).unwrap();
        image::RgbImage::from_pixel(5, 4, image::Rgb([9, 10, 200]))
            .save(d.join(class).join("0.png"))
            .unwrap();
    }
    std::fs::create_dir_all(d.join("empty-class")).unwrap();
    image::RgbImage::from_pixel(5, 4, image::Rgb([1, 1, 1]))
        .save(d.join("loose.png"))
        .unwrap();
    std::fs::write(d.join("b").join("notes.txt"), b"not an image").unwrap();
    let set = load_folder(&d, Cache::Off, None, 0, 0, LIMIT).unwrap();
    assert_eq!(
        (set.len(), set.classes.clone()),
        (2, vec!["a".to_string(), "b".to_string()])
    );
    let listed: Vec<(String, &str)> = set
        .skipped
        .iter()
        .map(|(p, why)| {
            (
                p.strip_prefix(&d).unwrap().display().to_string(),
                why.as_str(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed[0].0 == "b"
            && listed[0]
                .1
                .contains("1 file(s) that are not .jpg/.jpeg/.png"),
        "{listed:?}"
    );
    assert!(
        listed[1].0 == "empty-class" && listed[1].1.contains("not a class"),
        "{listed:?}"
    );
    assert!(
        listed[2].0 == "loose.png" && listed[2].1.contains("outside the class folders"),
        "{listed:?}"
    );
}

/// The cache's memory is estimated from the headers before anything is decoded, and a set
/// over the limit is refused with what to do instead.
#[test]
fn a_cache_over_its_limit_is_refused_before_decoding() {
    let d = tmpdir("cache-limit");
    std::fs::create_dir_all(d.join("a")).unwrap();
    for i in 0..4 {
        image::RgbImage::from_pixel(640, 512, image::Rgb([i, 0, 0]))
            .save(d.join("a").join(format!("{i}.png")))
            .unwrap();
    }
    // 4 × 640 × 512 × 3 bytes = 3.75 MiB.
    let e = load_folder(
        &d,
        Cache::InMemory {
            limit_bytes: 3 << 20,
        },
        None,
        0,
        0,
        LIMIT,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("would take 3 MB") && e.contains("(3 MB)") && e.contains("data.cache = false"),
        "{e}"
    );
    assert_eq!(
        load_folder(
            &d,
            Cache::InMemory {
                limit_bytes: 4 << 20
            },
            None,
            0,
            0,
            LIMIT
        )
        .unwrap()
        .len(),
        4
    );
}
