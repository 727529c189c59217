//! The tests of `run`.

use super::*;
use crate::eval::classifier::Labelled;
use crate::io::TensorFile;
use crate::model::params::{HostTensors, Named, collect, values};

fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    TensorFile::read(path, classifier::KIND).unwrap().tensors
}

/// A width-4 ResNet on 80 synthetic 16-pixel images of 10 classes (40 to test), with
/// `dc` as its `[distill]`.
fn small(dc: DistillConfig) -> (ExperimentConfig, crate::data::Splits) {
    let set = [
        "model.encoder.base-width=4",
        "data.image-size=16",
        "data.synthetic.train-per-class=8",
        "data.synthetic.test-per-class=4",
    ];
    let mut cfg = ExperimentConfig::load("small-cpu", &set.map(String::from)).unwrap();
    cfg.distill = dc;
    let splits = crate::data::load(&cfg.data, cfg.seed).unwrap();
    (cfg, splits)
}

/// The student a distillation with `cfg` from a teacher described by `info` starts from.
fn fresh_student(cfg: &ExperimentConfig, info: &ClassifierInfo, device: &Device) -> Finetuned {
    let encoder = reinit(
        info.encoder.init(info.image_size, device),
        key(cfg.seed, Stream::DistillStudent, &[]),
    );
    Finetuned::new(
        encoder,
        None,
        info.encoder.output_dim(),
        info.classes.len(),
        cfg.seed,
        device,
    )
}

/// A teacher: `cfg`'s encoder fine-tuned on `fraction` of the training labels for `epochs`.
fn fine_tuned(
    cfg: &ExperimentConfig,
    splits: &crate::data::Splits,
    fraction: f64,
    epochs: usize,
    device: &Device,
) -> Finetuned {
    let enc = &cfg.model.encoder;
    let tune = crate::eval::FinetuneConfig {
        label_fraction: fraction,
        epochs,
        batch_size: 8,
        ..Default::default()
    };
    let init = |d: &Device| Ok((reinit(enc.init(cfg.data.image_size, d), 11), None));
    crate::eval::finetune(
        &init,
        enc.output_dim(),
        &splits.train,
        &splits.test,
        &cfg.augment,
        16,
        &tune,
        5,
        (device, None),
    )
    .unwrap()
    .1
}

/// A teacher fine-tuned for an epoch (BatchNorm statistics no fresh network has), saved in a
/// new folder `root` and read back, with its description and its file's tensors.
fn saved_teacher(
    cfg: &ExperimentConfig,
    splits: &crate::data::Splits,
    root: &Path,
    device: &Device,
) -> (classifier::Saved, ClassifierInfo, HostTensors) {
    let (n, classes) = (splits.train.len(), splits.train.classes.clone());
    let enc = cfg.model.encoder.clone();
    // A teacher fine-tuned for an epoch: BatchNorm statistics no fresh network has.
    let teacher = fine_tuned(cfg, splits, 0.25, 1, device);
    let info = ClassifierInfo {
        encoder: enc,
        stem_width: None,
        classes,
        image_size: 16,
        mean: cfg.augment.mean,
        std: cfg.augment.std,
        labelled: Some(Labelled {
            fraction: 0.25,
            seed: 5,
            of_images: n,
            images: 20,
        }),
    };
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).unwrap();
    classifier::save(&teacher, &info, &root.join("teacher.safetensors")).unwrap();
    let saved = classifier::read(&root.join("teacher.safetensors"), device).unwrap();
    let before = tensors(&root.join("teacher.safetensors"));
    (saved, info, before)
}

/// A fresh run into `b` (which holds the stopped run's checkpoints) is refused, and so is
/// resuming it with another temperature or against another teacher, each by name.
fn assert_resume_refusals(run: &Distillation<'_>, b: &Path, cfg: &ExperimentConfig) {
    let device = run.device.clone();
    // A fresh run into a directory that holds checkpoints is refused.
    let e = distill(run, b, &DistillOptions::default(), &mut ())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("resume"), "{e}");
    let hotter = ExperimentConfig {
        distill: DistillConfig {
            temperature: 2.0,
            ..cfg.distill.clone()
        },
        ..cfg.clone()
    };
    let resume = DistillOptions {
        resume: true,
        ..Default::default()
    };
    let refused = |d: Distillation<'_>| distill(&d, b, &resume, &mut ()).err().unwrap().to_string();
    let e = refused(Distillation {
        config: &hotter,
        device: device.clone(),
        ..*run
    });
    assert!(e.contains("distill.temperature"), "{e}");
    let other = classifier::Saved {
        sha256: "0".repeat(64),
        network: run.teacher.network.clone(),
        info: run.teacher.info.clone(),
        path: run.teacher.path.clone(),
    };
    let e = refused(Distillation {
        teacher: &other,
        device: device.clone(),
        ..*run
    });
    assert!(e.contains("another teacher"), "{e}");
}

/// The run in `b` (interrupted, resumed) logged steps 1 to 10 once each, as the run in `a`
/// (uninterrupted) did, and wrote the same student, bit for bit: its tensors.
fn assert_same_logs_and_students(a: &Path, b: &Path) -> HostTensors {
    // The log of the interrupted run is the uninterrupted one's: steps 1 to 10, once each.
    let log = std::fs::read_to_string(b.join(METRICS)).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<StepLine>(l).unwrap().step)
        .collect();
    assert_eq!(steps, (1..=10).collect::<Vec<_>>());
    assert_eq!(log, std::fs::read_to_string(a.join(METRICS)).unwrap());
    let (sa, sb) = (tensors(&a.join(STUDENT)), tensors(&b.join(STUDENT)));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (k, v) in &sa {
        assert_eq!(v, &sb[k], "{k}");
    }
    sa
}

/// A distillation stopped at step 7 (between checkpoints) and resumed ends with the student,
/// bit for bit, of one run through its 10 steps; the teacher (BatchNorm statistics included)
/// is unchanged by either; resuming against another teacher or with another temperature is
/// refused by name.
#[test]
fn an_interrupted_distillation_resumes_to_the_uninterrupted_student_and_leaves_the_teacher_alone() {
    let device = Device::flex();
    let (cfg, splits) = small(DistillConfig {
        epochs: 2,
        batch_size: 16,
        checkpoint_every: 3,
        labelled_weight: 0.5,
        ..Default::default()
    });
    let (n, classes) = (splits.train.len(), splits.train.classes.clone());
    assert_eq!((n, classes.len()), (80, 10));
    let root = std::env::temp_dir().join(format!("byol-distill-{}", std::process::id()));
    let (saved, info, before) = saved_teacher(&cfg, &splits, &root, &device);
    let run = Distillation {
        teacher: &saved,
        config: &cfg,
        train: &splits.train,
        test: &splits.test,
        device: device.clone(),
    };
    let whole = distill(&run, &root.join("a"), &DistillOptions::default(), &mut ()).unwrap();
    let DistillOutcome::Finished(a) = whole else {
        panic!("stopped")
    };
    assert_eq!(
        (a.steps, a.labelled_images, a.epoch_losses.len()),
        (10, 20, 2)
    );
    let b = root.join("b");
    let stopped = distill(
        &run,
        &b,
        &DistillOptions {
            max_steps: Some(7),
            ..Default::default()
        },
        &mut (),
    )
    .unwrap();
    assert!(matches!(stopped, DistillOutcome::Stopped { step: 7 }));
    assert_resume_refusals(&run, &b, &cfg);
    // As if killed after logging step 8 without its checkpoint: that line is logged again.
    let mut log = std::fs::read_to_string(b.join(METRICS)).unwrap();
    log.push_str("{\"step\":8,\"loss\":9.0,\"lr\":0.0}\n");
    std::fs::write(b.join(METRICS), log).unwrap();
    let DistillOutcome::Finished(r) = distill(
        &run,
        &b,
        &DistillOptions {
            resume: true,
            ..Default::default()
        },
        &mut (),
    )
    .unwrap() else {
        panic!("stopped")
    };
    let sa = assert_same_logs_and_students(&root.join("a"), &b);
    assert_eq!(
        (r.student, r.epoch_losses.clone()),
        (a.student, a.epoch_losses.clone())
    );
    // The student moved from its initialisation, and the teacher did not move at all.
    let fresh = collect(&fresh_student(&cfg, &info, &device));
    let w = |m: &BTreeMap<String, Named>, k: &str| values(&m[k].flat).unwrap();
    assert_ne!(sa["head.weight"].1, w(&fresh, "head.weight"));
    assert_eq!(tensors(&root.join("teacher.safetensors")), before);
    let now = collect(&saved.network);
    for (k, (_, v)) in &before {
        assert_eq!(&w(&now, k), v, "{k}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// With the labelled weight at 0 the student learns from the teacher's soft labels alone:
/// its top-1 on the unlabelled images agrees with the teacher's far more often than the
/// teacher's most frequent class (the best a student that ignores the input could do) or the
/// student at its initialisation. (The run test above would pass with uniform targets: its
/// labelled term moves the student anyway.)
#[test]
fn at_labelled_weight_zero_the_student_learns_the_teachers_predictions() {
    let device = Device::flex();
    let (cfg, splits) = small(DistillConfig {
        epochs: 20,
        batch_size: 16,
        labelled_weight: 0.0,
        ..Default::default()
    });
    let enc = cfg.model.encoder.clone();
    let classes = splits.train.classes.clone();
    // A teacher fine-tuned on every label, so that its predictions spread over the classes.
    let teacher = fine_tuned(&cfg, &splits, 1.0, 5, &device);
    let info = ClassifierInfo {
        encoder: enc,
        stem_width: None,
        classes,
        image_size: 16,
        mean: cfg.augment.mean,
        std: cfg.augment.std,
        labelled: None,
    };
    let root = std::env::temp_dir().join(format!("byol-distill-zero-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    classifier::save(&teacher, &info, &root.join("teacher.safetensors")).unwrap();
    let saved = classifier::read(&root.join("teacher.safetensors"), &device).unwrap();
    let run = Distillation {
        teacher: &saved,
        config: &cfg,
        train: &splits.train,
        test: &splits.test,
        device: device.clone(),
    };
    assert!(matches!(
        distill(&run, &root.join("run"), &DistillOptions::default(), &mut ()).unwrap(),
        DistillOutcome::Finished(_)
    ));
    let top1 = |net: &Finetuned| -> Vec<usize> {
        let x = crate::eval::features::eval_batch(
            &splits.train,
            0..splits.train.len(),
            16,
            &cfg.augment,
            &device,
        )
        .unwrap();
        let logits: Vec<f32> = net.forward(x).into_data().try_into_vec().unwrap();
        logits
            .chunks(10)
            .map(|r| (0..10).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
            .collect()
    };
    let wanted = top1(&saved.network);
    let agreement = |net: &Finetuned| {
        top1(net)
            .iter()
            .zip(&wanted)
            .filter(|(a, b)| a == b)
            .count() as f64
            / wanted.len() as f64
    };
    let student = agreement(
        &classifier::read(&root.join("run").join(STUDENT), &device)
            .unwrap()
            .network,
    );
    let at_init = agreement(&fresh_student(&cfg, &info, &device).valid());
    let majority = (0..10)
        .map(|c| wanted.iter().filter(|&&w| w == c).count())
        .max()
        .unwrap() as f64
        / wanted.len() as f64;
    // Measured: 0.625 against 0.275 and 0.0125; with uniform targets (checked) 0.1.
    assert!(
        student >= majority + 0.2 && student >= at_init + 0.2,
        "student {student}, at init {at_init}, most frequent class {majority}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}
