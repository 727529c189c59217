//! The tests of `segment`.

use super::super::training::small_encoder as small;
use super::*;

/// A zero head setting is refused under its own name (`head-dilation = 0` was reported as
/// `head-channels`).
#[test]
fn each_head_setting_is_named_in_its_error() {
    let e = SegmentConfig {
        head_dilation: 0,
        ..Default::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("transfer.segment.head-dilation") && !e.contains("head-channels"),
        "{e}"
    );
    let e = SegmentConfig {
        head_channels: 0,
        ..Default::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("transfer.segment.head-channels"), "{e}");
}

/// Sizes that would abort an allocation are refused when the config is read: a crop of
/// 100,000 px (it aborted), mosaics of 50 × 50 tiles (they grew to 23 GB); and an epoch
/// count whose steps overflow is an error before a step (`--epochs 9223372036854775807`
/// panicked with "capacity overflow").
#[test]
fn sizes_and_epochs_beyond_reach_are_refused() {
    let e = SegmentConfig {
        crop: 100_000,
        ..Default::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("transfer.segment.crop") && e.contains("8 to 1024"),
        "{e}"
    );
    let mosaic = SegmentData::Mosaic {
        grid: 50,
        tile: 32,
        train: 16,
        val: 8,
    };
    let e = SegmentConfig {
        data: mosaic,
        ..Default::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("transfer.segment.data") && e.contains("over 1024 px"),
        "{e}"
    );
    let e = crate::transfer::depth::DepthConfig {
        data: crate::transfer::depth::DepthData::Synthetic {
            train: 4,
            val: 2,
            size: 100_000,
        },
        ..Default::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("transfer.depth.data") && e.contains("16 to 1024 px"),
        "{e}"
    );
    let training = SegmentConfig {
        epochs: usize::MAX,
        batch_size: 2,
        ..Default::default()
    }
    .training();
    let e = training
        .epochs(4, 0, Stream::SegmentOrder)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("transfer.segment.epochs") && e.contains("overflow"),
        "{e}"
    );
}

/// The FCN's logits have the input's size, for inputs that the output stride divides and
/// for one it does not.
#[test]
fn the_fcn_output_has_the_input_size() {
    let device = Device::flex();
    let (encoder, dim) = small();
    let cfg = SegmentConfig {
        head_channels: 8,
        ..Default::default()
    };
    let fcn = Fcn::new(encoder, dim, 5, &cfg, 0, &device).valid();
    for (h, w) in [(32, 32), (40, 24), (37, 29)] {
        assert_eq!(
            fcn.forward(Tensor::zeros([2, 3, h, w], &device)).dims(),
            [2, 5, h, w]
        );
    }
}

/// The loss is the mean of −log p(label) over the counted pixels: ignored pixels change
/// neither its value nor get a gradient.
#[test]
fn the_loss_ignores_the_ignore_label() {
    let device = Device::flex().autodiff();
    let raw: Vec<f32> = vec![2.0, 0.0, -1.0, 0.5, 0.0, 1.0, 3.0, 0.5]; // [1, 2, 2, 2]: class-major
    let logits =
        Tensor::<4>::from_data(TensorData::new(raw.clone(), [1, 2, 2, 2]), &device).require_grad();
    let labels = [0, 1, IGNORE, 0];
    let loss = pixel_loss(logits.clone(), &labels);
    // −log softmax by hand for pixels 0, 1 and 3.
    let nll = |p: usize, k: usize| {
        let (a, b) = (raw[p] as f64, raw[4 + p] as f64);
        let z = (a.exp() + b.exp()).ln();
        z - if k == 0 { a } else { b }
    };
    let expect = (nll(0, 0) + nll(1, 1) + nll(3, 0)) / 3.0;
    assert!((f64::from(loss.clone().into_scalar::<f32>()) - expect).abs() < 1e-6);
    let g: Vec<f32> = logits
        .grad(&loss.backward())
        .unwrap()
        .into_data()
        .try_into_vec()
        .unwrap();
    assert_eq!((g[2], g[6]), (0.0, 0.0), "pixel 2 is ignored: {g:?}");
    assert!(g[0] != 0.0 && g[5] != 0.0);
    let none = pixel_loss(
        Tensor::<4>::from_data(TensorData::new(raw, [1, 2, 2, 2]), &device),
        &[IGNORE; 4],
    );
    assert_eq!(none.into_scalar::<f32>(), 0.0);
}

/// Fine-tuning on a few mosaics of the built-in shapes lowers the loss and labels the
/// validation mosaics' pixels well above chance (10 balanced classes: 10 %).
#[test]
fn fine_tuning_on_mosaics_lowers_the_loss_and_beats_chance() {
    use crate::data::{SyntheticConfig, synthetic};
    let device = Device::flex();
    let splits = synthetic::generate(
        &SyntheticConfig {
            train_per_class: 16,
            test_per_class: 8,
        },
        16,
        0,
    );
    let as_samples = |set, n, seed| -> Vec<Sample> {
        super::super::mosaic::mosaics(set, n, 2, 16, seed)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, m)| Sample {
                id: i.to_string(),
                image: m.image,
                mask: m.mask,
            })
            .collect()
    };
    let (train, val) = (
        as_samples(&splits.train, 96, 1),
        as_samples(&splits.test, 24, 2),
    );
    let (encoder, dim) = small();
    let cfg = SegmentConfig {
        epochs: 12,
        batch_size: 8,
        learning_rate: 0.05,
        head_channels: 16,
        crop: 32,
        ..Default::default()
    };
    let run = Run {
        aug: &AugmentConfig::default(),
        seed: 0,
        device: &device,
        progress: &mut (),
        session: &mut (),
    };
    let classes = &splits.train.classes;
    let (r, _) = segment((encoder, dim), (&train, &val, classes), &cfg, run)
        .unwrap()
        .unwrap();
    assert_eq!((r.steps, r.val_images), (144, 24));
    // Measured: 2.51 → 1.82 and 30 % of the pixels.
    assert!(
        r.epoch_losses[11] < 0.8 * r.epoch_losses[0],
        "{:?}",
        r.epoch_losses
    );
    assert!(r.val.pixel_accuracy > 0.2, "{:?}", r.val);
    // The run's mIoU, against the best constant answer's (every pixel the most frequent class).
    let mut counts = vec![0usize; classes.len()];
    val.iter()
        .flat_map(|s| &s.mask)
        .filter(|&&m| m != IGNORE)
        .for_each(|&m| counts[m as usize] += 1);
    let most = (0..classes.len()).max_by_key(|&k| counts[k]).unwrap() as u8;
    let mut constant = Confusion::new(classes.len());
    val.iter()
        .for_each(|s| constant.add(&vec![most; s.mask.len()], &s.mask));
    let floor = constant.scores().miou;
    assert!(
        r.val.miou > 2.0 * floor,
        "mIoU {} against the constant answer's {floor}",
        r.val.miou
    );
}

/// A crop keeps each pixel's label with its pixel: at scale 1 without padding, the crop's
/// image (de-normalised) and labels are a window of the sample's, flipped or not.
#[test]
fn crops_keep_pixels_and_labels_together() {
    let (w, h) = (12, 10);
    let image = Rgb8 {
        width: w,
        height: h,
        data: (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect(),
    };
    let mask: Vec<u8> = (0..w * h).map(|i| (i % 5) as u8).collect();
    let sample = Sample {
        id: "s".into(),
        image,
        mask,
    };
    let cfg = SegmentConfig {
        scale: [1.0, 1.0],
        crop: 8,
        ..Default::default()
    };
    let aug = AugmentConfig::default();
    for seed in 0..6 {
        let (x, labels) = train_crop(&sample, &cfg, &aug, &mut rng(seed, Stream::Augment, &[0]));
        let red = |o: usize| ((x[o] * aug.std[0] + aug.mean[0]) * 255.0).round() as u8;
        let found = (0..=h - 8)
            .flat_map(|y0| (0..=w - 8).map(move |x0| (y0, x0)))
            .any(|(y0, x0)| {
                [false, true].iter().any(|&flip| {
                    (0..64).all(|o| {
                        let (y, xx) = (o / 8, o % 8);
                        let i = (y0 + y) * w + x0 + if flip { 7 - xx } else { xx };
                        labels[o] == sample.mask[i] && red(o) == sample.image.data[i * 3]
                    })
                })
            });
        assert!(found, "seed {seed}: the crop is no window of the sample");
    }
    // Scaled below the crop: the padding is ignored.
    let cfg = SegmentConfig {
        scale: [0.5, 0.5],
        crop: 8,
        ..Default::default()
    };
    let (_, labels) = train_crop(&sample, &cfg, &aug, &mut rng(0, Stream::Augment, &[0]));
    assert_eq!(labels.iter().filter(|&&l| l == IGNORE).count(), 64 - 6 * 5);
}
