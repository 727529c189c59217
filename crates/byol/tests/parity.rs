//! Step parity with PyTorch: from the initial state stored in `tests/parity/step_parity.safetensors`
//! and on its stored views, our training step must follow the trajectory that PyTorch computed
//! (`tests/parity/make_fixture.py`, which anyone can rerun): 4 BYOL steps (ResNet-18 CIFAR stem at
//! base width 4, projector and predictor, LARS with the bias/BatchNorm exclusions and weight decay,
//! warm-up + cosine learning rate, cosine τ, EMA target, BatchNorm in training mode in the online
//! network and the target), then one SimCLR and one MoCo v2 step from the same state. Losses,
//! every parameter and running statistic of the online network, predictor and target, and MoCo's
//! queue are compared.
//!
//! The reference is PyTorch's trajectory in float64; ours runs in f32 with other summation orders
//! (im2col, Winograd, fused batch norm). What f32 rounding explains is measured by the fixture
//! script for every quantity, in two ways: how far PyTorch's own float32 run strays from the
//! float64 one (`f32_deviation`), and how far the float64 trajectory moves when every initial
//! parameter is perturbed by 2 ulps of f32 (`sensitivity`; the early BatchNorm β are the most
//! sensitive, up to 4e-5, since their gradient is a sum over all positions that nearly cancels).
//! The tolerance of a quantity is [`ROUNDING_FACTOR`] times the larger of the two: our convolution
//! kernels round a few ulps differently per operation (up to ~6e-7 relative on a weight gradient,
//! against burn's convolution), which measured here moves a quantity up to 16× PyTorch's f32
//! deviation but at most 0.44 of the tolerance. Deviations are max |ours − reference| over a
//! tensor, relative to the tensor's largest |reference|. The recipe is short (4 steps, small
//! learning rate) on purpose: BYOL on 8 images is chaotic over longer runs, and 6 steps already
//! amplify f32-sized differences into per-cent ones (a ReLU or a small-variance channel crossing
//! over), which no rounding tolerance can state honestly.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use byol::ExperimentConfig;
use byol::model::params::{Named, collect, load};
use byol::train::{Queue, TrainState, train_step};
use std::collections::BTreeMap;

/// Tolerance in units of the larger of PyTorch's f32 deviation and the 2-ulp sensitivity.
const ROUNDING_FACTOR: f64 = 8.0;
/// Smallest tolerance on a relative deviation: 8 ulps of f32.
const FLOOR: f64 = 8.0 * f32::EPSILON as f64;

struct Fixture {
    tensors: BTreeMap<String, (Vec<usize>, Vec<f64>)>,
    recipe: serde_json::Value,
    f32_deviation: BTreeMap<String, f64>,
    sensitivity: BTreeMap<String, f64>,
    /// The largest deviation / tolerance seen so far, and its quantity.
    worst: std::cell::RefCell<(f64, String)>,
}

fn fixture() -> Fixture {
    fixture_in("step_parity.safetensors")
}

/// The fixture `name` in `tests/parity/`.
fn fixture_in(name: &str) -> Fixture {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/parity")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("metadata");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            safetensors::Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            d => panic!("{name}: unexpected dtype {d:?}"),
        };
        tensors.insert(name, (view.shape().to_vec(), values));
    }
    Fixture {
        tensors,
        recipe: serde_json::from_str(&meta["recipe"]).unwrap(),
        f32_deviation: serde_json::from_str(&meta["f32_deviation"]).unwrap(),
        sensitivity: serde_json::from_str(&meta["sensitivity"]).unwrap(),
        worst: Default::default(),
    }
}

impl Fixture {
    fn get(&self, name: &str) -> &(Vec<usize>, Vec<f64>) {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the fixture"))
    }
    fn r(&self, key: &str) -> f64 {
        self.recipe[key].as_f64().unwrap()
    }
    fn u(&self, key: &str) -> usize {
        self.recipe[key].as_u64().unwrap() as usize
    }
    /// The tensors under `prefix`, by our path, as f32 rank-1 tensors.
    fn named(&self, prefix: &str, device: &Device) -> BTreeMap<String, Named> {
        self.tensors
            .iter()
            .filter_map(|(k, (shape, v))| {
                let path = k.strip_prefix(prefix)?;
                let flat: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                let n = flat.len();
                Some((
                    path.to_string(),
                    Named {
                        flat: Tensor::from_data(TensorData::new(flat, [n]), device),
                        shape: shape.clone(),
                    },
                ))
            })
            .collect()
    }
    fn view(&self, name: &str, device: &Device) -> Tensor<4> {
        let (shape, v) = self.get(name);
        let flat: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Tensor::from_data(
            TensorData::new(flat, [shape[0], shape[1], shape[2], shape[3]]),
            device,
        )
    }
    /// Whether `ours` is within the f32 tolerance of the reference `name`; returns the
    /// deviation, the tolerance, and the verdict.
    fn check(&self, name: &str, ours: &[f64]) -> (f64, f64, bool) {
        let (_, want) = self.get(name);
        assert_eq!(ours.len(), want.len(), "{name}: size");
        let scale = want.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
        let dev = ours
            .iter()
            .zip(want)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        let rounding =
            self.f32_deviation[name].max(self.sensitivity.get(name).copied().unwrap_or(0.0));
        let tol = (ROUNDING_FACTOR * rounding).max(FLOOR);
        let mut worst = self.worst.borrow_mut();
        if dev / tol > worst.0 {
            *worst = (dev / tol, name.to_string());
        }
        (dev, tol, dev <= tol)
    }
}

fn config(f: &Fixture, extra: &[&str]) -> ExperimentConfig {
    let mut o: Vec<String> = vec![
        "model.encoder.arch=\"resnet18\"".into(),
        "model.encoder.stem=\"cifar\"".into(),
        format!("model.encoder.base-width={}", f.u("width")),
        format!("model.projector.hidden={}", f.u("hidden")),
        format!("model.projector.output={}", f.u("proj")),
        format!("model.predictor.hidden={}", f.u("hidden")),
        format!("model.predictor.output={}", f.u("proj")),
        "target.init=\"copy\"".into(),
        "optim.kind=\"lars\"".into(),
        format!("optim.weight-decay={:e}", f.r("weight_decay")),
        format!("optim.momentum={}", f.r("momentum")),
        format!("optim.trust-coefficient={}", f.r("eta")),
        format!("target.tau-base={}", f.r("tau_base")),
        format!("train.batch-size={}", f.u("batch")),
        format!("data.image-size={}", f.u("size")),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    ExperimentConfig::load("small-cpu", &o).unwrap()
}

/// A state from the fixture's initial values (the target, when there is one, a copy of them).
fn initial_state(f: &Fixture, cfg: &ExperimentConfig, device: &Device) -> TrainState {
    let init = f.named("init/", device);
    let mut state = TrainState::init(cfg, device);
    let (online, missing) = load(state.online, &init);
    assert!(missing.is_empty(), "not in the fixture: {missing:?}");
    state.online = online;
    if let Some(t) = state.target.take() {
        let (t, missing) = load(t, &init);
        assert!(missing.is_empty(), "not in the fixture: {missing:?}");
        state.target = Some(t);
    }
    state
}

fn flat(named: &Named) -> Vec<f64> {
    named
        .flat
        .clone()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Compare every tensor of `module_values` with the fixture's under `prefix`; returns the report
/// lines of the failures and the number of tensors compared.
fn compare_all(
    f: &Fixture,
    prefix: &str,
    module_values: &BTreeMap<String, Named>,
    failures: &mut Vec<String>,
) -> usize {
    let mut n = 0;
    for (path, t) in module_values {
        let name = format!("{prefix}{path}");
        let (dev, tol, ok) = f.check(&name, &flat(t));
        if !ok {
            failures.push(format!("{name}: deviation {dev:.2e} > tolerance {tol:.2e}"));
        }
        n += 1;
    }
    let expected = f.tensors.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(
        n, expected,
        "{prefix}: compared {n} tensors, the fixture has {expected}"
    );
    n
}

#[test]
fn byol_steps_follow_the_pytorch_trajectory() {
    let f = fixture();
    byol_steps_follow(&f, &config(&f, &[]));
}

/// The same for a tiny ViT (`tests/parity/make_vit_fixture.py`: 2 blocks, 16 wide, 2 heads,
/// 4 px patches, the mean of the patch tokens) under AdamW, as MoCo v3 trains ViTs: the patch
/// embedding, class token, fixed position embeddings, attention, exact GELU, LayerNorms, the
/// optimiser's exclusions (biases, norms, the class token) and bias correction. Where a gradient
/// is zero in exact arithmetic (a bias under BatchNorm, the final LayerNorm's β under the heads'
/// BatchNorm), Adam turns rounding into a step of the learning rate's size: PyTorch's own f32 run
/// strays up to 1e-2 there, and the tolerance follows.
#[test]
fn vit_byol_steps_follow_the_pytorch_trajectory() {
    let f = fixture_in("vit_step_parity.safetensors");
    let o: Vec<String> = vec![
        "model.encoder.arch=\"vit-tiny\"".into(),
        format!("model.encoder.patch-size={}", f.u("patch")),
        format!("model.encoder.depth={}", f.u("depth")),
        format!("model.encoder.width={}", f.u("width")),
        format!("model.encoder.heads={}", f.u("heads")),
        "model.encoder.pool=\"mean\"".into(),
        format!("model.projector.hidden={}", f.u("hidden")),
        format!("model.projector.output={}", f.u("proj")),
        format!("model.predictor.hidden={}", f.u("hidden")),
        format!("model.predictor.output={}", f.u("proj")),
        "target.init=\"copy\"".into(),
        "optim.kind=\"adamw\"".into(),
        format!("optim.weight-decay={}", f.r("weight_decay")),
        format!("optim.beta1={}", f.r("beta1")),
        format!("optim.beta2={}", f.r("beta2")),
        format!("optim.epsilon={:e}", f.r("eps")),
        format!("target.tau-base={}", f.r("tau_base")),
        format!("train.batch-size={}", f.u("batch")),
        format!("data.image-size={}", f.u("size")),
    ];
    byol_steps_follow(&f, &ExperimentConfig::load("small-cpu", &o).unwrap());
}

/// The fixture's BYOL steps from its initial state with `cfg`: the schedules give PyTorch's
/// values, and the losses and every tensor of the online network and the target end within
/// their tolerances.
fn byol_steps_follow(f: &Fixture, cfg: &ExperimentConfig) {
    let device = Device::flex();
    let (steps, warmup) = (f.u("steps") as u64, f.u("warmup") as u64);
    let mut state = initial_state(f, cfg, &device);
    let (lrs, taus) = (&f.get("lr").1, &f.get("tau").1);
    let mut losses = Vec::new();
    for k in 0..steps {
        // Our schedules give PyTorch's values.
        let lr = byol::optim::schedule::lr_at(f.r("peak_lr"), k, warmup, steps);
        let tau = byol::ema::tau(f.r("tau_base"), k, steps);
        assert!(
            (lr - lrs[k as usize]).abs() < 1e-12 && (tau - taus[k as usize]).abs() < 1e-12,
            "step {k}: lr {lr}, τ {tau}"
        );
        let (v1, v2) = (
            f.view(&format!("views/{k}/1"), &device),
            f.view(&format!("views/{k}/2"), &device),
        );
        let (next, m) = train_step(state, v1, v2, lr, tau, &cfg.objective).unwrap();
        losses.push(f64::from(m.loss.into_scalar::<f32>()));
        state = next;
    }
    let mut failures = Vec::new();
    let (dev, tol, ok) = f.check("byol_loss", &losses);
    println!("losses {losses:?}: deviation {dev:.2e} (tolerance {tol:.2e})");
    if !ok {
        failures.push(format!(
            "byol_loss: {losses:?} deviates {dev:.2e} > {tol:.2e}"
        ));
    }
    let n = compare_all(
        f,
        "byol/online/",
        &collect(&state.online.valid()),
        &mut failures,
    ) + compare_all(
        f,
        "byol/target/",
        &collect(&state.target.unwrap().valid()),
        &mut failures,
    );
    println!(
        "{n} tensors compared; closest to its tolerance: {:?}",
        f.worst.borrow()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} tensors off the PyTorch trajectory:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn simclr_and_moco_steps_match_pytorch() {
    let f = fixture();
    let device = Device::flex();
    let lr = f.get("lr").1[f.u("warmup")];
    let (v1, v2) = (f.view("views/0/1", &device), f.view("views/0/2", &device));
    let mut failures = Vec::new();

    let simclr = config(
        &f,
        &[
            "model.use-predictor=false",
            "target.mode=\"none\"",
            "objective.kind=\"nt-xent\"",
            &format!("objective.temperature={}", f.r("simclr_t")),
        ],
    );
    let state = initial_state(&f, &simclr, &device);
    let (state, m) = train_step(state, v1.clone(), v2.clone(), lr, 1.0, &simclr.objective).unwrap();
    let (dev, tol, ok) = f.check("simclr_loss", &[f64::from(m.loss.into_scalar::<f32>())]);
    println!("SimCLR loss deviation {dev:.2e} (tolerance {tol:.2e})");
    if !ok {
        failures.push(format!("simclr_loss: {dev:.2e} > {tol:.2e}"));
    }
    compare_all(
        &f,
        "simclr/online/",
        &collect(&state.online.valid()),
        &mut failures,
    );

    let moco = config(
        &f,
        &[
            "model.use-predictor=false",
            "objective.kind=\"moco\"",
            &format!("objective.temperature={}", f.r("moco_t")),
            &format!("objective.queue-size={}", f.u("queue")),
        ],
    );
    let mut state = initial_state(&f, &moco, &device);
    let queue0 = f.named("moco/queue0", &device).remove("").unwrap();
    state.queue = Some(Queue {
        keys: queue0.flat.reshape([queue0.shape[0], queue0.shape[1]]),
        ptr: 0,
    });
    let tau = f.get("tau").1[f.u("warmup")];
    let (state, m) = train_step(state, v1, v2, lr, tau, &moco.objective).unwrap();
    let (dev, tol, ok) = f.check("moco_loss", &[f64::from(m.loss.into_scalar::<f32>())]);
    println!("MoCo loss deviation {dev:.2e} (tolerance {tol:.2e})");
    if !ok {
        failures.push(format!("moco_loss: {dev:.2e} > {tol:.2e}"));
    }
    compare_all(
        &f,
        "moco/online/",
        &collect(&state.online.valid()),
        &mut failures,
    );
    compare_all(
        &f,
        "moco/target/",
        &collect(&state.target.as_ref().unwrap().valid()),
        &mut failures,
    );
    // The ring buffer holds this step's 2B normalised keys in its first rows, the initial keys
    // after them.
    let keys = state.queue.unwrap().keys;
    let n = keys.dims().iter().product::<usize>();
    let (dev, tol, ok) = f.check(
        "moco/queue",
        &flat(&Named {
            flat: keys.reshape([n]),
            shape: vec![n],
        }),
    );
    if !ok {
        failures.push(format!("moco/queue: {dev:.2e} > {tol:.2e}"));
    }
    println!("closest to its tolerance: {:?}", f.worst.borrow());
    assert!(
        failures.is_empty(),
        "off the PyTorch step:\n{}",
        failures.join("\n")
    );
}
