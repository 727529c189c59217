//! Samples per second of our training step, on the model and batch of the PyTorch reference
//! (`shared/reference/byol_torch.py`): online forward on two views, target forward without
//! gradient, symmetric loss, backward, SGD with momentum 0.9 (lr 0.2·B/256, weight decay 1.5e-6),
//! EMA update. Mixed precision as the reference's autocast: the encoders in bf16 or f16, the
//! rest in f32 (`model::precision`). Synthetic inputs already on the device; the step is [`train_step`], the same code
//! as `pretrain`; median over the timed steps, each ended by reading the loss back.

use crate::Result;
use crate::backend::BackendKind;
use crate::config::{ExperimentConfig, TargetInit};
use crate::model::precision::Precision;
use crate::model::{Arch, Stem};
use crate::optim::OptimKind;
use crate::train::{TrainState, train_step};
use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;
use std::time::Instant;

/// The references' configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepArch {
    /// ResNet-18, CIFAR stem, 32×32 (`r18c32`).
    Resnet18Cifar,
    /// ResNet-50, ImageNet stem, 224×224 (`r50i224`).
    Resnet50,
    /// The `vit-cifar10-cpu` preset as it is (its ViT, heads, AdamW), 32×32 (`vitc32`): the
    /// model and step of `bench/vit_torch.py`.
    VitCifar,
}

impl StepArch {
    /// The reference's name of the configuration.
    pub fn name(self) -> &'static str {
        match self {
            StepArch::Resnet18Cifar => "r18c32",
            StepArch::Resnet50 => "r50i224",
            StepArch::VitCifar => "vitc32",
        }
    }

    /// The reference's batch for this configuration: 512 / 256 samples on a GPU, 64 / 8 on a CPU.
    pub fn default_batch(self, gpu: bool) -> usize {
        match (self, gpu) {
            (StepArch::Resnet18Cifar, true) => 512,
            (StepArch::Resnet50, true) => 256,
            (StepArch::Resnet18Cifar, false) => 64,
            (StepArch::Resnet50, false) => 8,
            (StepArch::VitCifar, true) => 512,
            (StepArch::VitCifar, false) => 128,
        }
    }

    /// The step to time: the reference's step at batch `batch` on `backend` (the reference's
    /// model, base width 64, heads 4096 → 256; SGD with momentum 0.9 at lr 0.2, weight decay
    /// 1.5e-6; a target copied from the online network, τ_base 0.996), then `overrides`
    /// (`section.key=value`, as `--set` anywhere), which [`StepBench::overrides`] reports beside
    /// the configuration's name.
    pub fn setup(
        self,
        batch: usize,
        backend: BackendKind,
        precision: Precision,
        overrides: &[String],
    ) -> Result<StepSetup> {
        let mut cfg = self.reference_config(batch, backend, precision)?;
        if !overrides.is_empty() {
            let origin = format!("the {} step with --set", self.name());
            // Validated there, as every config read with overrides.
            cfg = ExperimentConfig::from_toml_with_overrides(
                &cfg.to_toml(),
                std::path::Path::new(&origin),
                overrides,
            )?;
        }
        Ok(StepSetup {
            arch: self,
            overrides: overrides.to_vec(),
            cfg,
        })
    }

    fn reference_config(
        self,
        batch: usize,
        backend: BackendKind,
        precision: Precision,
    ) -> Result<ExperimentConfig> {
        let (arch, stem, size) = match self {
            StepArch::Resnet18Cifar => (Arch::Resnet18, Stem::Cifar, 32),
            StepArch::Resnet50 => (Arch::Resnet50, Stem::Imagenet, 224),
            StepArch::VitCifar => {
                let mut cfg = ExperimentConfig::load("vit-cifar10-cpu", &[])?;
                cfg.backend = backend;
                (cfg.train.batch_size, cfg.train.precision) = (batch, precision);
                cfg.validate()?;
                return Ok(cfg);
            }
        };
        let mut cfg = ExperimentConfig::load("small-cpu", &[])?;
        cfg.backend = backend;
        let mut e = cfg.model.encoder.resnet("the step benchmark")?.clone();
        (e.arch, e.stem, e.base_width) = (arch, stem, 64);
        cfg.model.encoder = e.into();
        for head in [&mut cfg.model.projector, &mut cfg.model.predictor] {
            (head.hidden, head.output) = (4096, 256);
        }
        (cfg.target.init, cfg.target.tau_base) = (TargetInit::Copy, 0.996);
        let o = &mut cfg.optim;
        (o.kind, o.base_lr, o.weight_decay, o.momentum) = (OptimKind::Sgd, 0.2, 1.5e-6, 0.9);
        cfg.data.image_size = size;
        (cfg.train.batch_size, cfg.train.precision) = (batch, precision);
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The step [`bench_step`] times: a reference's configuration and the overrides that made it,
/// built together by [`StepArch::setup`] so that the line reports the configuration it ran.
#[derive(Debug, Clone)]
pub struct StepSetup {
    arch: StepArch,
    overrides: Vec<String>,
    cfg: ExperimentConfig,
}

impl StepSetup {
    /// The resolved experiment config of the step.
    pub fn config(&self) -> &ExperimentConfig {
        &self.cfg
    }
}

/// One line of `byol bench step`, in the reference's fields.
#[derive(Debug, Clone, Serialize)]
pub struct StepBench {
    pub cfg: String,
    /// The `--set` overrides on top of the reference's configuration (none for the reference's
    /// own step).
    pub overrides: Vec<String>,
    pub device: String,
    pub batch: usize,
    pub dtype: String,
    pub step_ms_median: f64,
    pub samples_per_s: f64,
    /// The first step alone, seconds: on a GPU it compiles every kernel and (with autotune) times
    /// the variants of each convolution and matmul, unless the cache already has them
    /// ([`crate::backend::gpu_cache_dir`]).
    pub first_step_s: f64,
    /// The other warm-up steps together, seconds.
    pub warmup_s: f64,
    pub loss: f64,
    /// Peak memory, GiB: on `flex` the process's peak resident memory; on a GPU backend what
    /// the device allocator holds after the steps (its pools keep the pages of the peak).
    pub peak_mem_gib: Option<f64>,
    pub threads: usize,
    /// burn's autotune and fusion in this build (GPU backends only; false on `flex`).
    pub autotune: bool,
    pub fusion: bool,
}

/// Peak resident set size of this process in GiB (Linux), if known.
fn peak_rss_gib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((kb / (1024.0 * 1024.0) * 100.0).round() / 100.0)
}

/// Time `steps` training steps after `warmup` untimed ones.
pub fn bench_step(
    setup: &StepSetup,
    steps: usize,
    warmup: usize,
    device: &Device,
) -> crate::Result<StepBench> {
    let cfg = &setup.cfg;
    let (b, s) = (cfg.train.batch_size, cfg.data.image_size);
    let (build, gpu) = (
        crate::backend::gpu_build(),
        cfg.backend != crate::backend::BackendKind::Flex,
    );
    cfg.train.precision.check(device)?;
    let state = TrainState::init(cfg, device);
    let precision = cfg.train.precision;
    let xs: Vec<Tensor<4>> = (0..4)
        .map(|_| {
            precision.cast(Tensor::random(
                [b, 3, s, s],
                Distribution::Normal(0.0, 1.0),
                device,
            ))
        })
        .collect();
    let lr = crate::optim::schedule::peak_lr(cfg.optim.base_lr, b);
    let tau = cfg.target.tau_base;
    let run = |i: usize, state: TrainState| -> crate::Result<(TrainState, f64)> {
        let (next, m) = train_step(
            state,
            xs[i % 4].clone(),
            xs[(i + 1) % 4].clone(),
            lr,
            tau,
            &cfg.objective,
        )?;
        Ok((next, f64::from(m.loss.into_scalar::<f32>()))) // reading the loss waits for the device
    };
    let t0 = Instant::now();
    let (mut state, mut loss) = run(0, state)?;
    let first_step_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for i in 1..warmup.max(1) {
        (state, loss) = run(i, state)?;
    }
    let warmup_s = t1.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(steps);
    for i in 0..steps.max(1) {
        let t = Instant::now();
        (state, loss) = run(i, state)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    Ok(StepBench {
        cfg: setup.arch.name().to_string(),
        overrides: setup.overrides.clone(),
        device: cfg.backend.name().to_string(),
        batch: b,
        dtype: precision.name().into(),
        step_ms_median: (med * 1e6).round() / 1e3,
        samples_per_s: (b as f64 / med * 10.0).round() / 10.0,
        first_step_s: (first_step_s * 100.0).round() / 100.0,
        warmup_s: (warmup_s * 10.0).round() / 10.0,
        loss,
        peak_mem_gib: if cfg.backend == crate::backend::BackendKind::Flex {
            peak_rss_gib()
        } else {
            device
                .memory_pool_usage()
                .map(|u| (u.bytes_reserved as f64 / (1u64 << 30) as f64 * 100.0).round() / 100.0)
        },
        threads: rayon::current_num_threads(),
        autotune: gpu && build.autotune,
        fusion: gpu && build.fusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's model and optimizer (shared/reference/byol_torch.py), on the backend and
    /// in the precision asked for.
    #[test]
    fn configs_are_the_references() {
        let c = StepArch::Resnet50
            .setup(8, BackendKind::Flex, Precision::Bf16, &[])
            .unwrap()
            .cfg;
        let e = c.model.encoder.resnet("").unwrap();
        assert_eq!(
            (e.arch, e.stem, e.base_width, c.data.image_size),
            (Arch::Resnet50, Stem::Imagenet, 64, 224)
        );
        assert_eq!(
            (
                c.model.projector.hidden,
                c.model.projector.output,
                c.model.predictor.hidden,
                c.model.predictor.output
            ),
            (4096, 256, 4096, 256)
        );
        assert_eq!(
            (
                c.optim.kind,
                c.optim.base_lr,
                c.optim.weight_decay,
                c.optim.momentum
            ),
            (OptimKind::Sgd, 0.2, 1.5e-6, 0.9)
        );
        assert_eq!(
            (
                c.target.init,
                c.target.tau_base,
                c.train.batch_size,
                c.train.precision
            ),
            (TargetInit::Copy, 0.996, 8, Precision::Bf16)
        );
        let c = StepArch::Resnet18Cifar
            .setup(64, BackendKind::Cuda, Precision::F32, &[])
            .unwrap()
            .cfg;
        assert_eq!(
            (
                c.model.encoder.resnet("").unwrap().arch,
                c.model.encoder.resnet("").unwrap().stem,
                c.data.image_size,
                c.backend
            ),
            (Arch::Resnet18, Stem::Cifar, 32, BackendKind::Cuda)
        );
        assert!(
            StepArch::Resnet18Cifar
                .setup(1, BackendKind::Flex, Precision::F32, &[])
                .is_err(),
            "batch 1 is refused"
        );
    }

    /// `--set` changes the field named and keeps the rest of the reference's step; a field the
    /// config lacks is refused, naming the step.
    #[test]
    fn overrides_change_the_named_field_only() {
        let sets = ["model.encoder.base-width=4".to_string()];
        let setup = StepArch::Resnet18Cifar
            .setup(2, BackendKind::Flex, Precision::F32, &sets)
            .unwrap();
        assert_eq!(
            setup.overrides, sets,
            "the line reports what made the config"
        );
        let c = setup.config();
        assert_eq!(
            (
                c.model.encoder.resnet("").unwrap().base_width,
                c.model.projector.hidden,
                c.optim.kind,
                c.target.init
            ),
            (4, 4096, OptimKind::Sgd, TargetInit::Copy)
        );
        let err = StepArch::Resnet18Cifar
            .setup(
                2,
                BackendKind::Flex,
                Precision::F32,
                &["model.nope=1".into()],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope") && err.contains("r18c32"), "{err}");
    }
}
