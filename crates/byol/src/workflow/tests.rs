//! The tests of `workflow`.

use super::*;

#[test]
fn fractions_parse_as_written() {
    let table = [
        ("10%", 0.1),
        ("1 %", 0.01),
        (" 100% ", 1.0),
        ("0.25", 0.25),
        ("1", 1.0),
    ];
    for (s, want) in table {
        assert!((parse_fraction(s).unwrap() - want).abs() < 1e-15, "{s}");
    }
    for bad in ["0%", "150%", "-5%", "ten", "", "1.5", "%"] {
        assert!(
            parse_fraction(bad)
                .unwrap_err()
                .to_string()
                .contains("label-fraction"),
            "{bad}"
        );
    }
}

#[test]
fn run_dirs_are_named_after_the_config_and_the_time() {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_300_000);
    assert_eq!(
        new_run_dir("small-cpu", t),
        PathBuf::from("runs/small-cpu-1764300000")
    );
    assert_eq!(
        new_run_dir("configs/my-exp.toml", t),
        PathBuf::from("runs/my-exp-1764300000")
    );
}

#[test]
fn typed_settings_win_over_set_and_are_validated() {
    let s = Settings {
        set: vec!["train.epochs=3".into(), "model.encoder.base-width=4".into()],
        data: Some(Source::parse_shorthand("/images/mine")),
        backend: Some(BackendKind::Flex),
        epochs: Some(7),
        batch_size: Some(16),
        accumulate: Some(4),
        seed: Some(9),
        devices: Some(vec!["flex:0".parse().unwrap(), "flex:1".parse().unwrap()]),
    };
    let cfg = s.resolve("small-cpu").unwrap();
    assert_eq!(
        (
            cfg.train.epochs,
            cfg.train.batch_size,
            cfg.train.accumulate,
            cfg.seed,
            cfg.model.encoder.resnet("").unwrap().base_width
        ),
        (7, 16, 4, 9, 4)
    );
    assert_eq!(
        cfg.train
            .devices
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["flex:0", "flex:1"]
    );
    assert_eq!(
        cfg.data.source,
        Source::Folder {
            path: "/images/mine".into(),
            holdout_fraction: 0.1
        }
    );
    let bad = Settings {
        batch_size: Some(1),
        ..Default::default()
    }
    .resolve("small-cpu")
    .unwrap_err()
    .to_string();
    assert!(bad.contains("train.batch-size"), "{bad}");
    // On a resolved config (a checkpoint's): the same rules, and the rest kept.
    let again = Settings {
        epochs: Some(2),
        set: vec!["optim.base-lr=0.5".into()],
        ..Default::default()
    }
    .apply_to(&cfg, Path::new("x"))
    .unwrap();
    assert_eq!(
        (again.train.epochs, again.optim.base_lr, again.seed),
        (2, 0.5, 9)
    );
}

/// `--data` takes a source's settings from the config where the config reads the same kind of
/// source, and the new kind's defaults otherwise.
#[test]
fn a_data_flag_keeps_the_settings_of_its_kind_of_source() {
    let cifar = Settings {
        data: Some(Source::parse_shorthand("cifar100")),
        ..Default::default()
    }
    .resolve("small-cpu")
    .unwrap();
    assert_eq!(
        cifar.data.source,
        Source::Cifar100 {
            path: "data".into(),
            download: true
        }
    );
    // A source of the config's kind keeps the config's settings for it; the config's own
    // fields of another kind of source do not survive a change of source.
    let set = vec!["data.shuffle-buffer=7".into()];
    let shards = Settings {
        set,
        data: Some(Source::parse_shorthand("shards:/s")),
        ..Default::default()
    }
    .resolve("imagenet-resnet50-1000ep")
    .unwrap();
    assert_eq!(
        shards.data.source,
        Source::Shards {
            path: "/s".into(),
            test_path: None,
            shuffle_buffer: 7
        }
    );
    let synthetic = Settings {
        data: Some(Source::parse_shorthand("synthetic")),
        ..Default::default()
    }
    .resolve("cifar10-cpu")
    .unwrap();
    assert_eq!(synthetic.data.source, Source::Synthetic(Default::default()));
    let folder = Settings {
        set: vec!["data.holdout-fraction=0.3".into()],
        data: Some(Source::parse_shorthand("/f")),
        ..Default::default()
    }
    .resolve("cifar10-cpu")
    .unwrap();
    assert_eq!(
        folder.data.source,
        Source::Folder {
            path: "/f".into(),
            holdout_fraction: 0.3
        }
    );
}
