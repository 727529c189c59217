//! The view pipeline after the crop, batched on the training device.
//!
//! The official code runs flip, colour, blur and solarize on the accelerator with per-sample
//! parameters (a vmap over the batch). Here each operation runs once on the sub-batch of the
//! samples that use it, gathered with `select`; the results are concatenated and put back in
//! order with one more `select`. Every operation is a plain tensor expression, so one
//! implementation serves every backend.

use super::{AugmentConfig, LUMA, ViewConfig, ViewParams, gaussian_kernel, kernel_size, reflect};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

/// The device side of one view (its blur kernel side and the normalisation), for images of one
/// size. Build it once per run: it holds the constant blur-folding matrix.
pub struct ViewPipeline {
    size: usize,
    kernel: usize,
    /// Reflect-padding fold: [k, S·S], `fold[t, i·S + j]` = 1 when tap t of output i reads
    /// source pixel j (reflected at the borders, as [`super::gaussian_blur`]).
    fold: Option<Tensor<2>>,
    mean: Tensor<4>, // [1, 3, 1, 1]
    std: Tensor<4>,  // [1, 3, 1, 1]
    device: Device,
}

/// A per-sample scalar parameter, broadcastable against [n, C, S, S].
fn column(values: &[f32], device: &Device) -> Tensor<4> {
    Tensor::<1>::from_data(TensorData::new(values.to_vec(), [values.len()]), device).reshape([
        values.len(),
        1,
        1,
        1,
    ])
}

fn indices(idx: &[usize], device: &Device) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_data(
        TensorData::new(
            idx.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [idx.len()],
        ),
        device,
    )
}

/// One group of samples and the operation (with its per-sample parameters) applied to them.
type Group<'a> = (Vec<usize>, Box<dyn FnOnce(Tensor<4>) -> Tensor<4> + 'a>);

/// Apply each group's operation to its samples (the groups are disjoint); the others are left
/// as they are. `x`: [B, C, S, S].
fn apply_groups(x: Tensor<4>, groups: Vec<Group<'_>>, device: &Device) -> Tensor<4> {
    let b = x.dims()[0];
    let groups: Vec<Group<'_>> = groups.into_iter().filter(|g| !g.0.is_empty()).collect();
    if groups.is_empty() {
        return x;
    }
    if groups.len() == 1 && groups[0].0.len() == b {
        let (_, f) = groups.into_iter().next().expect("one group");
        return f(x); // every sample, in order
    }
    let mut used = vec![false; b];
    let mut perm = Vec::with_capacity(b);
    let mut parts = Vec::with_capacity(groups.len() + 1);
    for (idx, f) in groups {
        for &i in &idx {
            used[i] = true;
        }
        parts.push(f(x.clone().select(0, indices(&idx, device)))); // [n, C, S, S]
        perm.extend(idx);
    }
    let rest: Vec<usize> = (0..b).filter(|&i| !used[i]).collect();
    if !rest.is_empty() {
        parts.push(x.select(0, indices(&rest, device)));
        perm.extend(rest);
    }
    let mut inverse = vec![0usize; b];
    for (k, &i) in perm.iter().enumerate() {
        inverse[i] = k;
    }
    Tensor::cat(parts, 0).select(0, indices(&inverse, device)) // [B, C, S, S]
}

/// Samples for which `pick` returns a value, and those values.
fn pick<T>(params: &[ViewParams], f: impl Fn(&ViewParams) -> Option<T>) -> (Vec<usize>, Vec<T>) {
    params
        .iter()
        .enumerate()
        .filter_map(|(i, p)| f(p).map(|v| (i, v)))
        .unzip()
}

fn luma(x: &Tensor<4>) -> Tensor<4> {
    let c = |i: usize| x.clone().narrow(1, i, 1); // [n, 1, S, S]
    c(0) * LUMA[0] + c(1) * LUMA[1] + c(2) * LUMA[2]
}

/// x − m·floor(x/m), in [0, m) (Euclidean remainder).
fn rem_euclid(x: Tensor<4>, m: f32) -> Tensor<4> {
    x.clone() - (x / m).floor() * m
}

/// RGB → (H in turns, S, V), each [n, 1, S, S], with the host's branch order (red first).
fn rgb_to_hsv(x: Tensor<4>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let r = x.clone().narrow(1, 0, 1);
    let g = x.clone().narrow(1, 1, 1);
    let b = x.narrow(1, 2, 1);
    let max = r.clone().max_pair(g.clone()).max_pair(b.clone());
    let min = r.clone().min_pair(g.clone()).min_pair(b.clone());
    let d = max.clone() - min;
    let d_zero = d.clone().equal_elem(0.0);
    let d_safe = d.clone().mask_fill(d_zero.clone(), 1.0);
    let s = d / max.clone().mask_fill(max.clone().equal_elem(0.0), 1.0);
    let hr = rem_euclid((g.clone() - b.clone()) / d_safe.clone(), 6.0);
    let hg = (b.clone() - r.clone()) / d_safe.clone() + 2.0;
    let hb = (r.clone() - g.clone()) / d_safe + 4.0;
    let h = hb
        .mask_where(max.clone().equal(g), hg)
        .mask_where(max.clone().equal(r), hr)
        .mask_fill(d_zero, 0.0)
        / 6.0;
    (h, s, max)
}

/// (H, S, V) → RGB [n, 3, S, S]: channel n ∈ {5, 3, 1} is V − V·S·clamp(min(k, 4 − k), 0, 1)
/// with k = (n + 6H) mod 6 (the closed form of the sector formula the host uses).
fn hsv_to_rgb(h: Tensor<4>, s: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let vs = v.clone() * s;
    let channel = |n: f32| {
        let k = rem_euclid(h.clone() * 6.0 + n, 6.0);
        let w = k.clone().min_pair(k.neg() + 4.0).clamp(0.0, 1.0);
        v.clone() - vs.clone() * w
    };
    Tensor::cat(vec![channel(5.0), channel(3.0), channel(1.0)], 1)
}

fn brightness(x: Tensor<4>, delta: Tensor<4>) -> Tensor<4> {
    (x + delta).clamp(0.0, 1.0)
}

fn contrast(x: Tensor<4>, factor: Tensor<4>) -> Tensor<4> {
    let m = luma(&x).mean_dim(2).mean_dim(3); // [n, 1, 1, 1]
    ((x - m.clone()) * factor + m).clamp(0.0, 1.0)
}

fn saturation(x: Tensor<4>, factor: Tensor<4>) -> Tensor<4> {
    let (h, s, v) = rgb_to_hsv(x);
    hsv_to_rgb(h, (s * factor).clamp(0.0, 1.0), v).clamp(0.0, 1.0)
}

fn hue(x: Tensor<4>, delta: Tensor<4>) -> Tensor<4> {
    let (h, s, v) = rgb_to_hsv(x);
    let h = h + delta;
    hsv_to_rgb(h.clone() - h.floor(), s, v).clamp(0.0, 1.0)
}

fn solarize(x: Tensor<4>) -> Tensor<4> {
    let hi = x.clone().greater_equal_elem(0.5);
    x.clone().mask_where(hi, x.neg() + 1.0)
}

impl ViewPipeline {
    pub fn new(view: &ViewConfig, aug: &AugmentConfig, size: usize, device: &Device) -> Self {
        let kernel = kernel_size(size, view.blur_kernel_fraction);
        let fold = (kernel > 1).then(|| {
            let r = (kernel / 2) as isize;
            let mut f = vec![0f32; kernel * size * size];
            for t in 0..kernel {
                for i in 0..size {
                    f[t * size * size + i * size + reflect(i as isize + t as isize - r, size)] =
                        1.0;
                }
            }
            Tensor::<2>::from_data(TensorData::new(f, [kernel, size * size]), device)
        });
        let per_channel = |v: &[f32; 3]| {
            Tensor::<1>::from_data(TensorData::new(v.to_vec(), [3]), device).reshape([1, 3, 1, 1])
        };
        Self {
            size,
            kernel,
            fold,
            mean: per_channel(&aug.mean),
            std: per_channel(&aug.std),
            device: device.clone(),
        }
    }

    /// u8 crops (CHW per image, `params.len()` images of `size`², as [`super::resize_crop_u8`]
    /// makes them) → normalised views [B, 3, S, S] on the device.
    pub fn apply(&self, crops: Vec<u8>, params: &[ViewParams]) -> Tensor<4> {
        let x = self.upload(crops, params.len());
        self.normalize(self.augment(x, params))
    }

    /// A view from the loader, on the device: uploaded as it is if the host finished it,
    /// finished here otherwise. Returns [B, 3, S, S].
    pub fn finish(&self, view: super::loader::View, batch: usize) -> Tensor<4> {
        use super::loader::View;
        match view {
            View::Host(x) => {
                let s = self.size;
                Tensor::from_data(TensorData::new(x, [batch, 3, s, s]), &self.device)
            }
            View::Device(crops, params) => self.apply(crops, &params),
        }
    }

    /// u8 [B, 3, S, S] to the device, then to f32 in [0, 1] there (a quarter of the bytes to move).
    /// Where the device has no 8-bit storage (WGSL, on the `wgpu` backend), the bytes go up as
    /// f32 instead (4× the transfer, the same values).
    pub fn upload(&self, crops: Vec<u8>, batch: usize) -> Tensor<4> {
        let s = self.size;
        assert_eq!(
            crops.len(),
            batch * 3 * s * s,
            "crop buffer of the wrong length"
        );
        if self.device.supports_dtype(DType::U8) {
            let data = TensorData::new(crops, [batch, 3, s, s]);
            Tensor::<4, Int>::from_data(data, (&self.device, DType::U8)).float() / 255.0
        } else {
            let wide: Vec<f32> = crops.into_iter().map(f32::from).collect();
            Tensor::<4>::from_data(TensorData::new(wide, [batch, 3, s, s]), &self.device) / 255.0
        }
    }

    /// Everything after the crop, before normalisation: x [B, 3, S, S] in [0, 1].
    pub fn augment(&self, x: Tensor<4>, params: &[ViewParams]) -> Tensor<4> {
        let dev = &self.device;
        let (flip, _) = pick(params, |p| p.flip.then_some(()));
        let x = apply_groups(x, vec![(flip, Box::new(|t: Tensor<4>| t.flip([3])))], dev);
        // Colour jitter: at each of the four stages, each sample applies the operation its
        // random order puts there.
        let mut x = x;
        for stage in 0..4 {
            let groups: Vec<Group<'_>> = (0u8..4)
                .map(|op| {
                    let (idx, vals) = pick(params, |p| {
                        p.jitter
                            .filter(|j| j.order[stage] == op)
                            .map(|j| j.param(op))
                    });
                    let f: Box<dyn FnOnce(Tensor<4>) -> Tensor<4>> =
                        Box::new(move |t: Tensor<4>| {
                            let v = column(&vals, &t.device());
                            match op {
                                0 => brightness(t, v),
                                1 => contrast(t, v),
                                2 => saturation(t, v),
                                _ => hue(t, v),
                            }
                        });
                    (idx, f)
                })
                .collect();
            x = apply_groups(x, groups, dev);
        }
        let (gray, _) = pick(params, |p| p.grayscale.then_some(()));
        let x = apply_groups(
            x,
            vec![(gray, Box::new(|t: Tensor<4>| luma(&t).repeat_dim(1, 3)))],
            dev,
        );
        let x = match &self.fold {
            Some(fold) => {
                let (idx, sigmas) = pick(params, |p| p.blur_sigma);
                apply_groups(
                    x,
                    vec![(
                        idx,
                        Box::new(move |t: Tensor<4>| self.blur(t, &sigmas, fold)),
                    )],
                    dev,
                )
            }
            None => x,
        };
        let (sol, _) = pick(params, |p| p.solarize.then_some(()));
        apply_groups(x, vec![(sol, Box::new(solarize))], dev)
    }

    /// Separable Gaussian blur with per-sample σ as two matrix products: W·X·Wᵀ, where row i of
    /// W [S, S] holds the taps of output pixel i with the reflected borders folded in.
    fn blur(&self, x: Tensor<4>, sigmas: &[f32], fold: &Tensor<2>) -> Tensor<4> {
        let (n, s, k) = (sigmas.len(), self.size, self.kernel);
        let taps: Vec<f32> = sigmas
            .iter()
            .flat_map(|&sigma| gaussian_kernel(k, sigma))
            .collect();
        let taps = Tensor::<2>::from_data(TensorData::new(taps, [n, k]), &self.device); // [n, k]
        let w = taps
            .matmul(fold.clone())
            .reshape([n, 1, s, s])
            .expand([n, 3, s, s]); // [n, 3, S, S]
        let vertical = w.clone().matmul(x); // [n, 3, S, S]
        vertical.matmul(w.swap_dims(2, 3))
    }

    /// (x − mean)/std per channel.
    pub fn normalize(&self, x: Tensor<4>) -> Tensor<4> {
        (x - self.mean.clone()) / self.std.clone()
    }
}

#[cfg(test)]
mod tests {
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

    /// Each operation alone, at fixed parameters, against its definition.
    #[test]
    fn each_operation_matches_its_definition() {
        let dev = device();
        let aug = AugmentConfig {
            mean: [0.0; 3],
            std: [1.0; 3],
            ..AugmentConfig::default()
        };
        let size = 8;
        let none = ViewParams {
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
        };
        let mut r = rng(5, Stream::Augment, &[0]);
        let crops: Vec<u8> = (0..3 * size * size).map(|_| r.random()).collect();
        let jit = |order: [u8; 4], b: f32, c: f32, s: f32, h: f32| {
            Some(Jitter {
                order,
                brightness: b,
                contrast: c,
                saturation: s,
                hue: h,
            })
        };
        let cases = [
            ViewParams { flip: true, ..none },
            ViewParams {
                jitter: jit([0, 1, 2, 3], 0.3, 1.0, 1.0, 0.0),
                ..none
            },
            ViewParams {
                jitter: jit([1, 0, 2, 3], 0.0, 0.6, 1.0, 0.0),
                ..none
            },
            ViewParams {
                jitter: jit([2, 0, 1, 3], 0.0, 1.0, 1.7, 0.0),
                ..none
            },
            ViewParams {
                jitter: jit([3, 0, 1, 2], 0.0, 1.0, 1.0, -0.37),
                ..none
            },
            ViewParams {
                jitter: jit([3, 2, 1, 0], -0.2, 1.3, 0.8, 0.1),
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
        let view = ViewConfig {
            blur_kernel_fraction: 0.5,
            ..ViewConfig::paper_view1()
        }; // k = 5 at 8 px
        let pipe = ViewPipeline::new(&view, &aug, size, &dev);
        for p in cases {
            let ours = pipe
                .apply(crops.clone(), &[p])
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32");
            let host = finish_host(&crops, &[p], size, &view, &aug);
            let d = max_diff(&host, &ours);
            assert!(d < 1e-5, "{p:?}: max diff {d}");
        }
        // Pure colours: red shifted by a third of a turn is green.
        let red: Vec<u8> = [vec![255u8; 64], vec![0u8; 64], vec![0u8; 64]].concat();
        let p = ViewParams {
            jitter: jit([3, 0, 1, 2], 0.0, 1.0, 1.0, 1.0 / 3.0),
            ..none
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
}
