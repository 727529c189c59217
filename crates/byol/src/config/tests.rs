//! The tests of `config`.

use super::*;

#[test]
fn every_preset_parses_and_validates() {
    for (name, _) in PRESETS {
        ExperimentConfig::load(name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn extends_merges_over_a_preset() {
    let text = "extends = \"cifar10-cpu\"\n[model]\nuse-predictor = false\n[objective]\nkind = \"nt-xent\"\n[target]\nmode = \"none\"\n";
    let cfg = ExperimentConfig::from_toml_with_overrides(text, Path::new("x.toml"), &[]).unwrap();
    let base = ExperimentConfig::load("cifar10-cpu", &[]).unwrap();
    assert_eq!(cfg.model.encoder, base.model.encoder, "tables merge");
    assert!(!cfg.model.use_predictor && cfg.objective.kind == ObjectiveKind::NtXent);
    assert_eq!(cfg.train, base.train);
    let err = ExperimentConfig::from_toml_with_overrides(
        "extends = \"nope\"\n",
        Path::new("x.toml"),
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("nope") && err.to_string().contains("x.toml"),
        "{err}"
    );
}

#[test]
fn unknown_key_is_rejected_with_its_name() {
    let err = ExperimentConfig::load("small-cpu", &["optim.learning-rat=0.1".into()]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("learning-rat"), "{msg}");
}

#[test]
fn wrong_type_and_range_are_rejected() {
    let err =
        ExperimentConfig::load("small-cpu", &["train.batch-size=\"big\"".into()]).unwrap_err();
    assert!(err.to_string().contains("batch-size"), "{err}");
    let err = ExperimentConfig::load("small-cpu", &["target.tau-base=1.5".into()]).unwrap_err();
    assert!(err.to_string().contains("target.tau-base"), "{err}");
    let err = ExperimentConfig::load("small-cpu", &["optim.base-lr=-1".into()]).unwrap_err();
    assert!(err.to_string().contains("optim.base-lr"), "{err}");
    let err = ExperimentConfig::load("small-cpu", &["train.batch-size=0".into()]).unwrap_err();
    assert!(err.to_string().contains("train.batch-size"), "{err}");
}

#[test]
fn a_partial_view2_table_keeps_the_paper_view2_values() {
    // Only blur-prob given: solarisation stays at the paper's 0.2 for view t'.
    let text = "extends = \"small-cpu\"\n[augment.view2]\nblur-prob = 0.5\n";
    let cfg = ExperimentConfig::from_toml_with_overrides(text, Path::new("x.toml"), &[]).unwrap();
    let want = crate::augment::ViewConfig {
        blur_prob: 0.5,
        ..crate::augment::ViewConfig::paper_view2()
    };
    assert_eq!(cfg.augment.view2, want);
    // The same through --set on a config without the table.
    let text = "extends = \"small-cpu\"\n";
    let mut bare: toml::Table = PRESETS[0].1.parse().unwrap();
    if let Some(a) = bare.get_mut("augment").and_then(|a| a.as_table_mut()) {
        a.remove("view2");
    }
    let cfg = ExperimentConfig::from_toml_with_overrides(
        &toml::to_string(&bare).unwrap(),
        Path::new("x.toml"),
        &["augment.view2.hue=0.05".into()],
    )
    .unwrap();
    assert_eq!(
        cfg.augment.view2,
        crate::augment::ViewConfig {
            hue: 0.05,
            ..crate::augment::ViewConfig::paper_view2()
        }
    );
    // View t keeps view t's values.
    let cfg = ExperimentConfig::from_toml_with_overrides(
        text,
        Path::new("x.toml"),
        &["augment.view1.hue=0.05".into()],
    )
    .unwrap();
    assert_eq!(cfg.augment.view1.solarize_prob, 0.0);
}

/// `data.source` set on top of a config replaces the source: the old source's fields go, and
/// the new one's required fields must follow.
#[test]
fn setting_another_source_drops_the_old_sources_fields() {
    let c = ExperimentConfig::load("cifar10-cpu", &["data.source=\"synthetic\"".into()]).unwrap();
    assert_eq!(
        c.data.source,
        crate::data::Source::Synthetic(Default::default())
    );
    let e = ExperimentConfig::load("small-cpu", &["data.source=\"folder\"".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data.path is required with source = \"folder\""),
        "{e}"
    );
    let shards = ExperimentConfig::load(
        "cifar10-cpu",
        &[
            "data.source=\"shards\"".into(),
            "data.shuffle-buffer=5".into(),
        ],
    )
    .unwrap();
    let path = std::path::PathBuf::from("../shared/data/cifar10");
    assert_eq!(
        shards.data.source,
        crate::data::Source::Shards {
            path,
            test_path: None,
            shuffle_buffer: 5
        }
    );
    // The resolved config keeps only the source's own fields, and reads back the same.
    let text = shards.to_toml();
    assert!(
        text.contains("shuffle-buffer = 5") && !text.contains("holdout-fraction"),
        "{text}"
    );
    assert_eq!(
        ExperimentConfig::from_toml_with_overrides(&text, Path::new("x"), &[]).unwrap(),
        shards
    );
}

/// A checkpoint written before the typed source records every `[data]` field: it still
/// reads, while a config written that way by hand is refused.
#[test]
fn recorded_configs_in_the_earlier_data_layout_still_read() {
    let c = ExperimentConfig::load("small-cpu", &[]).unwrap();
    let old = c.to_toml().replace(
        "[data]\n",
        "[data]\ndownload = false\nholdout-fraction = 0.1\nshuffle-buffer = 4096\n",
    );
    assert!(ExperimentConfig::from_toml_with_overrides(&old, Path::new("x"), &[]).is_err());
    assert_eq!(
        ExperimentConfig::from_recorded_toml(&old, Path::new("x")).unwrap(),
        c
    );
}

#[test]
fn resume_differences_name_what_changes_the_trajectory() {
    let base = ExperimentConfig::load("small-cpu", &[]).unwrap();
    let same_run = ExperimentConfig::load(
        "small-cpu",
        &[
            "train.log-every=7".into(),
            "data.workers=1".into(),
            "eval.knn.k=5".into(),
            "train.checkpoint-every=3".into(),
        ],
    )
    .unwrap();
    assert!(
        same_run.resume_differences(&base).is_empty(),
        "{:?}",
        same_run.resume_differences(&base)
    );
    let other = ExperimentConfig::load(
        "small-cpu",
        &[
            "optim.base-lr=0.5".into(),
            "seed=3".into(),
            "augment.view2.solarize-prob=0.1".into(),
        ],
    )
    .unwrap();
    let d: Vec<String> = other
        .resume_differences(&base)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(
        d.iter().any(|l| l.starts_with("optim.base-lr: 1.0 → 0.5")),
        "{d:?}"
    );
    assert!(d.iter().any(|l| l.starts_with("seed: 0 → 3")), "{d:?}");
    assert!(
        d.iter()
            .any(|l| l.starts_with("augment.view2.solarize-prob")),
        "{d:?}"
    );
}

#[test]
fn overrides_apply_and_round_trip() {
    let cfg =
        ExperimentConfig::load("small-cpu", &["train.epochs=3".into(), "seed=9".into()]).unwrap();
    assert_eq!(cfg.train.epochs, 3);
    assert_eq!(cfg.seed, 9);
    let again =
        ExperimentConfig::from_toml_with_overrides(&cfg.to_toml(), Path::new("x"), &[]).unwrap();
    assert_eq!(cfg, again);
}

#[test]
fn paper_preset_has_paper_values() {
    let cfg = ExperimentConfig::load("imagenet-resnet50-1000ep", &[]).unwrap();
    assert_eq!(cfg.train.batch_size, 4096);
    assert_eq!(cfg.optim.base_lr, 0.2);
    assert_eq!(cfg.optim.weight_decay, 1.5e-6);
    assert_eq!(cfg.target.tau_base, 0.996);
    assert_eq!(cfg.model.projector.hidden, 4096);
    assert_eq!(cfg.model.projector.output, 256);
}
