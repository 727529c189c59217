//! The tests of `transfer`.

use super::*;

/// Scenes or mosaics over half the available memory are refused before any is made (a
/// `mosaic:50` grew to 23 GB and was killed; scenes of 100,000 px a side aborted).
#[test]
fn sets_over_the_memory_are_refused_before_they_are_made() {
    let huge = DepthData::Synthetic {
        train: 1 << 40,
        val: 1,
        size: 64,
    };
    let started = std::time::Instant::now();
    let Err(e) = depth_samples(&huge, 0) else {
        panic!("refused")
    };
    let e = e.to_string();
    assert!(
        e.contains("transfer.depth.data") && e.contains("GB in memory"),
        "{e}"
    );
    assert!(
        started.elapsed().as_secs() < 1,
        "refused before making scenes"
    );
    assert!(
        depth_samples(
            &DepthData::Synthetic {
                train: 2,
                val: 1,
                size: 16
            },
            0
        )
        .is_ok()
    );
}

/// Single-class training labels and a validation split with nothing labelled are errors (they
/// scored "mIoU 100 %" and "mIoU 0 %" before); two classes and one scored pixel pass.
#[test]
fn data_with_nothing_to_tell_apart_or_to_score_is_refused() {
    let image = crate::image::Rgb8 {
        width: 2,
        height: 1,
        data: vec![0; 6],
    };
    let s = |mask: [u8; 2]| {
        vec![Sample {
            id: "a".into(),
            image: image.clone(),
            mask: mask.to_vec(),
        }]
    };
    let classes = ["cat".to_string(), "dog".to_string()];
    let at = Path::new("data");
    let e = check_scoreable(&s([1, 1]), &s([0, 1]), &classes, at)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("only class 1 (dog)") && e.contains("at least two classes"),
        "{e}"
    );
    let e = check_scoreable(&s([IGNORE, IGNORE]), &s([0, 1]), &classes, at)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no class"), "{e}");
    let e = check_scoreable(&s([0, 1]), &s([IGNORE, IGNORE]), &classes, at)
        .unwrap_err()
        .to_string();
    assert!(e.contains("validation split has no labelled pixel"), "{e}");
    check_scoreable(&s([0, 1]), &s([IGNORE, 0]), &classes, at).unwrap();
}

/// Scenes written into a folder that holds an earlier set are refused (the stale scenes would
/// be read with the new ones); into a new folder they read back, every file whole.
#[test]
fn scenes_are_not_written_over_an_earlier_set() {
    let out = std::env::temp_dir().join(format!("byol-scenes-used-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let data = DepthData::Synthetic {
        train: 2,
        val: 1,
        size: 16,
    };
    assert_eq!(write_scenes(&data, 0, &out).unwrap(), (2, 1));
    assert_eq!(
        (
            read_folder(&out, Split::Train).unwrap().len(),
            read_folder(&out, Split::Val).unwrap().len()
        ),
        (2, 1)
    );
    let e = write_scenes(&data, 1, &out).unwrap_err().to_string();
    assert!(
        e.contains("already holds `train`") && e.contains("new or empty folder"),
        "{e}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// A depth run of 4 steps stopped after 2 (with a checkpoint) and resumed from its folder alone
/// ends with the uninterrupted run's result, bit for bit: the epochs' losses and the scores. A
/// new run into a folder with checkpoints is refused, and so is resuming a folder without one.
/// (The first run leaves the evaluation's encoder as it was: the second starts from the same.)
#[test]
fn a_stopped_transfer_run_resumes_to_the_uninterrupted_result() {
    let set = [
        "model.encoder.base-width=4",
        "transfer.depth.epochs=2",
        "transfer.depth.batch-size=4",
        "transfer.depth.checkpoint-every=3",
        "transfer.depth.pictures=1",
        "transfer.depth.data.source=\"synthetic\"",
        "transfer.depth.data.train=8",
        "transfer.depth.data.val=2",
        "transfer.depth.data.size=16",
    ];
    let e = random_init(&set);
    let root = std::env::temp_dir().join(format!("byol-transfer-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (a, b) = (root.join("a"), root.join("b"));
    let finished = |o: TransferOutcome<DepthRun>| match o {
        TransferOutcome::Finished(r) => r,
        TransferOutcome::Stopped { step } => panic!("stopped at {step}"),
    };
    let whole = finished(depth(&e, &a, &TransferOptions::default(), &mut (), &mut |_| {}).unwrap());
    assert_eq!(whole.result.steps, 4);
    let stop = TransferOptions {
        max_steps: Some(2),
        ..Default::default()
    };
    let stopped = depth(&e, &b, &stop, &mut (), &mut |_| panic!("not scored")).unwrap();
    assert!(matches!(stopped, TransferOutcome::Stopped { step: 2 }));
    let e2 = depth(&e, &b, &TransferOptions::default(), &mut (), &mut |_| {})
        .err()
        .unwrap();
    assert!(e2.to_string().contains("resume it"), "{e2}");
    let resumed = Evaluation::resumed_transfer(&b, DEPTH_CHECKPOINT).unwrap();
    assert_eq!(
        (resumed.label.as_str(), resumed.config.transfer.depth.epochs),
        ("random-init encoder", 2)
    );
    let resume = TransferOptions {
        resume: true,
        ..Default::default()
    };
    let mut announced = None;
    let again = finished(
        depth(&resumed, &b, &resume, &mut (), &mut |r| {
            announced = Some(r.result.val.rms)
        })
        .unwrap(),
    );
    assert_eq!(announced, Some(again.result.val.rms));
    assert_eq!(again.result.epoch_losses, whole.result.epoch_losses);
    assert_eq!(again.result.val, whole.result.val);
    assert!(b.join(crate::train::run_dir::DEPTH).is_file() && b.join(PREDICTIONS).is_file());
    let empty = root.join("c");
    let e3 = depth(&e, &empty, &resume, &mut (), &mut |_| {})
        .err()
        .unwrap();
    assert!(e3.to_string().contains("no checkpoint"), "{e3}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The dense tasks read a ResNet's feature maps: on a ViT each is refused with an error naming
/// `model.encoder.arch`, before its output folder is made.
#[test]
fn a_vit_is_refused_by_the_dense_tasks_before_anything_is_written() {
    let set = [
        "model.encoder.arch=\"vit-tiny\"",
        "model.encoder.patch-size=4",
        "model.encoder.depth=1",
        "model.encoder.width=8",
        "model.encoder.heads=2",
    ];
    let e = random_init(&set);
    let out = std::env::temp_dir().join(format!("byol-transfer-vit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let opts = TransferOptions::default();
    let errors = [
        segment(&e, &out, &opts, &mut (), &mut |_| {}).err(),
        depth(&e, &out, &opts, &mut (), &mut |_| {}).err(),
    ];
    for (task, err) in ["segment", "depth"].iter().zip(errors) {
        let err = err.expect("refused").to_string();
        assert!(
            err.contains("model.encoder.arch") && err.contains(task) && err.contains("vit-tiny"),
            "{err}"
        );
    }
    assert!(!out.exists(), "nothing written");
}

/// An evaluation of a random-init encoder (drawn from seed 3) of `small-cpu` with `set`.
fn random_init(set: &[&str]) -> Evaluation {
    let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    let config = crate::config::ExperimentConfig::load("small-cpu", &set).unwrap();
    let device = config.backend.device().unwrap();
    let online = crate::train::random_init_online(&config, &device);
    Evaluation {
        config,
        device,
        encoder: crate::model::params::reinit(online.encoder, 3),
        projector: online.projector,
        splits: Default::default(),
        label: "random-init encoder".into(),
        step: 0,
        run_dir: None,
    }
}
