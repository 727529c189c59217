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
mod tests;
