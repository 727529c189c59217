//! The tests of `finetune`.

use super::*;
use crate::model::MlpConfig;
use crate::model::params::collect;

/// Fine-tuning from `projector:1` starts from the projector's first Linear and BatchNorm
/// exactly as trained (weights, bias, γ, β, running statistics), with the classifier on its
/// hidden width; from the encoder, on the encoder's width.
#[test]
fn the_projector_layer_is_loaded_exactly() {
    let device = Device::flex();
    let cfg =
        crate::config::ExperimentConfig::load("small-cpu", &["model.encoder.base-width=4".into()])
            .unwrap();
    let encoder = cfg.model.encoder.init(cfg.data.image_size, &device);
    let d = cfg.model.encoder.output_dim();
    let projector = MlpConfig {
        hidden: 24,
        output: 8,
        layers: 3,
    }
    .init(d, &device);
    let mut projector =
        crate::model::params::reinit(projector, crate::rng::key(5, Stream::Init, &[1]));
    // BatchNorm values no fresh layer has.
    let ramp = |k: f32| {
        Tensor::<1>::from_data(
            TensorData::new(
                (0..24).map(|i| k + i as f32 / 10.0).collect::<Vec<_>>(),
                [24],
            ),
            &device,
        )
    };
    projector.bn.gamma = burn::module::Param::from_tensor(ramp(0.5));
    projector.bn.beta = burn::module::Param::from_tensor(ramp(-1.0));
    projector.bn.running_mean = burn::module::RunningState::new(ramp(0.25));
    projector.bn.running_var = burn::module::RunningState::new(ramp(2.0));
    let trained = collect(&projector);
    let m = Finetuned::new(
        encoder.clone(),
        Some(ProjectorLayer::of(projector)),
        d,
        10,
        0,
        &device,
    );
    let stem = collect(m.stem.as_ref().unwrap());
    for (from, to) in [
        ("fc1.weight", "fc.weight"),
        ("fc1.bias", "fc.bias"),
        ("bn.gamma", "bn.gamma"),
        ("bn.beta", "bn.beta"),
        ("bn.running_mean", "bn.running_mean"),
        ("bn.running_var", "bn.running_var"),
    ] {
        let (a, b) = (&trained[from].flat, &stem[to].flat);
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.clone().into_data().try_into_vec().unwrap(),
            b.clone().into_data().try_into_vec().unwrap(),
        );
        assert_eq!(a, b, "{from}");
    }
    assert_eq!(m.head.weight.dims(), [24, 10]);
    let x = Tensor::<4>::zeros([2, 3, 32, 32], &device);
    assert_eq!(m.forward(x.clone()).dims(), [2, 10]);
    let plain = Finetuned::new(encoder, None, d, 10, 0, &device);
    assert_eq!(
        (plain.head.weight.dims(), plain.forward(x).dims()),
        ([d, 10], [2, 10])
    );
}

/// A width-4 ResNet's config on 12 synthetic 16-pixel training images per class (2 to test),
/// and the data.
fn twelve_per_class() -> (crate::config::ExperimentConfig, crate::data::Splits) {
    let cfg = crate::config::ExperimentConfig::load(
        "small-cpu",
        &[
            "model.encoder.base-width=4",
            "data.image-size=16",
            "data.synthetic.train-per-class=12",
            "data.synthetic.test-per-class=2",
        ]
        .map(String::from),
    )
    .unwrap();
    let splits = crate::data::load(&cfg.data, cfg.seed).unwrap();
    (cfg, splits)
}

/// The labelled subset and the images held out to choose a rate on: disjoint, 3 per class each.
#[test]
fn the_held_out_images_are_balanced_and_apart_from_the_labelled_ones() {
    let (_, splits) = twelve_per_class();
    let labelled = balanced_subset(&splits.train.labels, 10, 60, 5);
    let validation = held_out(&splits.train, &labelled, 0.25, 5);
    assert_eq!(validation.len(), 30);
    assert!(validation.iter().all(|i| !labelled.contains(i)));
    for c in 0..10 {
        let n = validation
            .iter()
            .filter(|&&i| splits.train.labels[i] == c)
            .count();
        assert_eq!(n, 3, "class {c}");
    }
}

/// Several learning rates: the network kept is the one trained at the rate with the best
/// validation top-1 (the same weights as a run at that rate alone), not the last one tried.
#[test]
fn the_rate_with_the_best_validation_accuracy_is_kept() {
    let device = Device::flex();
    let (cfg, splits) = twelve_per_class();
    let enc = cfg.model.encoder.clone();
    let start = |d: &Device| {
        Ok((
            crate::model::params::reinit(enc.init(cfg.data.image_size, d), 3),
            None,
        ))
    };
    let run = |lrs: Vec<f64>| {
        let tune = FinetuneConfig {
            label_fraction: 0.5,
            epochs: 10,
            batch_size: 10,
            learning_rates: lrs,
            validation_fraction: 0.25,
            ..Default::default()
        };
        tune.validate().unwrap();
        finetune(
            &start,
            enc.output_dim(),
            &splits.train,
            &splits.test,
            &cfg.augment,
            16,
            &tune,
            5,
            (&device, None),
        )
        .unwrap()
    };
    let head = |m: &Finetuned| {
        m.head
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    let (swept, kept) = run(vec![0.5, 1e-4]);
    assert_eq!(
        (
            swept.sweep.len(),
            swept.validation_images,
            swept.labelled_images
        ),
        (2, 30, 60)
    );
    let best = swept
        .sweep
        .iter()
        .fold(swept.sweep[0], |b, &s| if s.1 > b.1 { s } else { b });
    assert_eq!(swept.learning_rate, best.0, "{:?}", swept.sweep);
    assert_ne!(
        swept.sweep[0].1, swept.sweep[1].1,
        "the two rates are not told apart: {:?}",
        swept.sweep
    );
    let (alone, at_best) = run(vec![best.0]);
    let (_, at_other) = run(vec![swept.sweep.iter().find(|s| s.0 != best.0).unwrap().0]);
    assert_eq!(head(&kept), head(&at_best));
    assert_ne!(head(&kept), head(&at_other));
    assert_eq!((alone.sweep.len(), alone.validation_images), (0, 0));
    assert_eq!(alone.test.top1, swept.test.top1);
}

/// `learning-rate = x` (the key of earlier versions) and `learning-rates = [..]` read alike; no
/// rate, a non-positive one, or labelled and held-out images together more than all are refused.
#[test]
fn learning_rates_read_and_validate() {
    let read = |t: &str| toml::from_str::<FinetuneConfig>(t).unwrap();
    assert_eq!(read("learning-rate = 0.1").learning_rates, vec![0.1]);
    assert_eq!(
        read("learning-rates = [0.5, 0.05]").learning_rates,
        vec![0.5, 0.05]
    );
    for (t, field) in [
        ("learning-rates = []", "learning-rates"),
        ("learning-rates = [0.5, -1.0]", "learning-rates"),
        (
            "learning-rates = [0.5, 0.05]\nlabel-fraction = 0.99",
            "validation-fraction",
        ),
        (
            "learning-rates = [0.5, 0.05]\nvalidation-fraction = 0.0",
            "validation-fraction",
        ),
    ] {
        let e = read(t).validate().unwrap_err().to_string();
        assert!(e.contains(&format!("eval.finetune.{field}")), "{t}: {e}");
    }
    assert!(
        read("learning-rate = 0.1\nlabel-fraction = 1.0")
            .validate()
            .is_ok(),
        "one rate needs no held-out images"
    );
}

/// A set interrupt (a signal handler's) ends fine-tuning at the next step boundary with an error
/// that names the run and the step; nothing is returned as a result.
#[test]
fn an_interrupt_ends_fine_tuning_with_an_error() {
    let device = Device::flex();
    let (cfg, splits) = twelve_per_class();
    let enc = cfg.model.encoder.clone();
    let start = |d: &Device| {
        Ok((
            crate::model::params::reinit(enc.init(cfg.data.image_size, d), 3),
            None,
        ))
    };
    let tune = FinetuneConfig {
        label_fraction: 0.5,
        epochs: 2,
        batch_size: 10,
        ..Default::default()
    };
    let stop = std::sync::atomic::AtomicBool::new(true);
    let (train, test) = (&splits.train, &splits.test);
    let e = finetune(
        &start,
        enc.output_dim(),
        train,
        test,
        &cfg.augment,
        16,
        &tune,
        5,
        (&device, Some(&stop)),
    )
    .expect_err("stopped");
    assert!(matches!(e, Error::Interrupted { step: 0, .. }), "{e}");
    assert!(
        e.to_string()
            .contains("fine-tuning at learning rate 0.05 interrupted at step 0"),
        "{e}"
    );
}
