//! The tests of `device`.

use super::super::{Crop, Jitter, finish_host, sample_params};
use super::*;
use crate::rng::{Stream, rng};
use rand::Rng;

fn device() -> Device {
    crate::backend::BackendKind::Flex.device().expect("flex")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The device pipeline equals the host reference for random images and random parameters
/// of both paper views (every operation and every order of the jitter occurs).
#[test]
fn device_pipeline_matches_the_host_reference() {
    let dev = device();
    let aug = AugmentConfig::default();
    for (size, view) in [(32, &aug.view1), (32, &aug.view2), (24, &aug.view1)] {
        let b = 48;
        let mut r = rng(11, Stream::Augment, &[size as u64]);
        let crops: Vec<u8> = (0..b * 3 * size * size).map(|_| r.random()).collect();
        let params: Vec<ViewParams> = (0..b)
            .map(|_| sample_params(size, size, view, &mut r))
            .collect();
        let host = finish_host(&crops, &params, size, view, &aug);
        let pipe = ViewPipeline::new(view, &aug, size, &dev);
        let ours = pipe
            .apply(crops.clone(), &params)
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32");
        // Normalised values are divided by std ≈ 0.225: 1e-5 in [0, 1] is 4.4e-5 here.
        let d = max_diff(&host, &ours);
        assert!(d < 5e-5, "size {size}: max |host − device| = {d}");
    }
}

/// The parameters of a view that changes nothing of an 8-pixel crop.
fn identity() -> ViewParams {
    ViewParams {
        crop: Crop {
            x: 0.0,
            y: 0.0,
            w: 8.0,
            h: 8.0,
        },
        flip: false,
        jitter: None,
        grayscale: false,
        blur_sigma: None,
        solarize: false,
    }
}

fn jitter(
    order: [u8; 4],
    brightness: f32,
    contrast: f32,
    saturation: f32,
    hue: f32,
) -> Option<Jitter> {
    Some(Jitter {
        order,
        brightness,
        contrast,
        saturation,
        hue,
    })
}

/// The device pipeline of an 8-pixel view with a 5-pixel blur kernel and no normalisation.
fn plain_pipeline() -> (ViewPipeline, ViewConfig, AugmentConfig) {
    let aug = AugmentConfig {
        mean: [0.0; 3],
        std: [1.0; 3],
        ..AugmentConfig::default()
    };
    // k = 5 at 8 px
    let view = ViewConfig {
        blur_kernel_fraction: 0.5,
        ..ViewConfig::paper_view1()
    };
    (ViewPipeline::new(&view, &aug, 8, &device()), view, aug)
}

/// Each operation alone, at fixed parameters, against its definition.
#[test]
fn each_operation_matches_its_definition() {
    let (pipe, view, aug) = plain_pipeline();
    let none = identity();
    let mut r = rng(5, Stream::Augment, &[0]);
    let crops: Vec<u8> = (0..3 * 8 * 8).map(|_| r.random()).collect();
    let cases = [
        ViewParams { flip: true, ..none },
        ViewParams {
            jitter: jitter([0, 1, 2, 3], 0.3, 1.0, 1.0, 0.0),
            ..none
        },
        ViewParams {
            jitter: jitter([1, 0, 2, 3], 0.0, 0.6, 1.0, 0.0),
            ..none
        },
        ViewParams {
            jitter: jitter([2, 0, 1, 3], 0.0, 1.0, 1.7, 0.0),
            ..none
        },
        ViewParams {
            jitter: jitter([3, 0, 1, 2], 0.0, 1.0, 1.0, -0.37),
            ..none
        },
        ViewParams {
            jitter: jitter([3, 2, 1, 0], -0.2, 1.3, 0.8, 0.1),
            ..none
        },
        ViewParams {
            grayscale: true,
            ..none
        },
        ViewParams {
            blur_sigma: Some(1.3),
            ..none
        },
        ViewParams {
            solarize: true,
            ..none
        },
    ];
    for p in cases {
        let ours = pipe
            .apply(crops.clone(), &[p])
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32");
        let host = finish_host(&crops, &[p], 8, &view, &aug);
        let d = max_diff(&host, &ours);
        assert!(d < 1e-5, "{p:?}: max diff {d}");
    }
}

/// Pure colours: red shifted by a third of a turn of hue is green.
#[test]
fn a_third_of_a_turn_of_hue_takes_red_to_green() {
    let (pipe, _, _) = plain_pipeline();
    let red: Vec<u8> = [vec![255u8; 64], vec![0u8; 64], vec![0u8; 64]].concat();
    let p = ViewParams {
        jitter: jitter([3, 0, 1, 2], 0.0, 1.0, 1.0, 1.0 / 3.0),
        ..identity()
    };
    let out = pipe
        .apply(red, &[p])
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32");
    assert!(
        out[..64].iter().all(|v| v.abs() < 1e-5)
            && out[64..128].iter().all(|v| (v - 1.0).abs() < 1e-5)
            && out[128..].iter().all(|v| v.abs() < 1e-5)
    );
}

/// A blurred impulse is the outer product of the 1-D kernel (separable, sums to one).
#[test]
fn device_blur_of_an_impulse_is_the_outer_product() {
    let dev = device();
    let size = 9;
    let view = ViewConfig {
        blur_kernel_fraction: 5.0 / 9.0,
        ..ViewConfig::paper_view1()
    };
    let pipe = ViewPipeline::new(&view, &AugmentConfig::default(), size, &dev);
    assert_eq!(pipe.kernel, 5);
    let mut x = vec![0f32; 3 * size * size];
    x[4 * size + 4] = 1.0;
    let p = ViewParams {
        crop: Crop {
            x: 0.0,
            y: 0.0,
            w: 9.0,
            h: 9.0,
        },
        flip: false,
        jitter: None,
        grayscale: false,
        blur_sigma: Some(1.0),
        solarize: false,
    };
    let t = Tensor::<4>::from_data(TensorData::new(x, [1, 3, size, size]), &dev);
    let out = pipe
        .augment(t, &[p])
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32");
    let k = gaussian_kernel(5, 1.0);
    let total: f32 = out[..size * size].iter().sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
    for dy in 0..5 {
        for dx in 0..5 {
            assert!((out[(2 + dy) * size + 2 + dx] - k[dy] * k[dx]).abs() < 1e-6);
        }
    }
}
