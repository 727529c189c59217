//! The encoder learns: every parameter that should train requires a gradient, gets a non-zero
//! one and moves; the optimizer refuses to skip one silently; the target's BatchNorm uses batch
//! statistics and keeps its own running statistics moving.
#![allow(
    clippy::single_range_in_vec_init,
    reason = "burn's `slice` takes one range per dimension: `[a..b]` is rows a..b"
)]

use burn::module::{Module, Param};
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use byol::model::params::{Named, PathVisitor, collect, is_buffer, visit_paths};
use byol::train::{TrainState, train_step};
use byol::{Error, ExperimentConfig};
use std::collections::BTreeMap;

fn tiny(extra: &[&str]) -> ExperimentConfig {
    let mut o: Vec<String> = [
        "model.encoder.base-width=4",
        "model.projector.hidden=32",
        "model.projector.output=16",
        "model.predictor.hidden=32",
        "model.predictor.output=16",
        "optim.weight-decay=0.0",
        "data.image-size=16",
        "train.batch-size=8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.extend(extra.iter().map(|s| s.to_string()));
    ExperimentConfig::load("small-cpu", &o).unwrap()
}

/// N(mean, std²) values of `shape`, drawn from `seed` (Box–Muller on the project's seeded
/// stream): every run of these tests sees the same inputs, unlike burn's unseeded
/// `Tensor::random`, whose draws made two of them flaky.
fn normal(shape: [usize; 4], mean: f32, std: f32, seed: u64, device: &Device) -> Tensor<4> {
    use rand::Rng;
    let mut r = byol::rng::rng(seed, byol::rng::Stream::Augment, &[u64::MAX]);
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n)
        .map(|_| {
            let (u, v): (f32, f32) = (r.random::<f32>().max(f32::MIN_POSITIVE), r.random());
            mean + std * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect();
    Tensor::from_data(TensorData::new(x, shape), device)
}

/// The two views of step `k`: [b, 3, s, s] each.
fn views(b: usize, s: usize, k: u64, device: &Device) -> (Tensor<4>, Tensor<4>) {
    (
        normal([b, 3, s, s], 0.0, 1.0, 2 * k + 1, device),
        normal([b, 3, s, s], 0.0, 1.0, 2 * k + 2, device),
    )
}

fn values(t: &Tensor<1>) -> Vec<f32> {
    t.clone().into_data().try_into_vec().unwrap()
}

/// Visits every trainable parameter (BatchNorm running statistics excluded) with its path.
struct Trainable<'a, F: FnMut(&str, bool, Option<f32>)> {
    grads: Option<&'a Gradients>,
    f: F,
}

impl<F: FnMut(&str, bool, Option<f32>)> PathVisitor for Trainable<'_, F> {
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>) {
        if is_buffer(path) {
            return;
        }
        // Largest |gradient| of the parameter, when asked and present.
        let g = self
            .grads
            .and_then(|g| param.val().grad(g))
            .map(|g| g.abs().max().into_scalar::<f32>());
        (self.f)(path, param.is_require_grad(), g)
    }
}

/// Paths of the online parameters that do not require a gradient, or (with `grads`) got a zero
/// or no gradient.
fn untrained(state: &TrainState, grads: Option<&Gradients>) -> (usize, Vec<String>) {
    let (mut n, mut bad) = (0, Vec::new());
    let mut v = Trainable {
        grads,
        f: |path: &str, requires: bool, g: Option<f32>| {
            n += 1;
            if !requires {
                bad.push(format!("{path}: requires no gradient"));
            } else if grads.is_some() && !g.is_some_and(|g| g > 0.0) {
                bad.push(format!("{path}: gradient {g:?}"));
            }
        },
    };
    visit_paths(&state.online, &mut v);
    (n, bad)
}

/// The gradients of the BYOL loss of one step, computed as the step computes them.
fn byol_grads(state: &TrainState, v1: Tensor<4>, v2: Tensor<4>) -> Gradients {
    let o1 = state.online.forward(v1.clone().autodiff());
    let o2 = state.online.forward(v2.clone().autodiff());
    let t = state.target.as_ref().unwrap();
    byol::loss::byol_loss(o1.prediction, o2.prediction, t.forward(v1), t.forward(v2)).backward()
}

/// Biases whose gradient is zero in exact arithmetic: that of each MLP head's first Linear,
/// which a BatchNorm follows, and that of the projector's last Linear, which feeds only the
/// predictor's first Linear and so that BatchNorm too: a BatchNorm subtracts the batch mean, so a
/// shift common to the batch never reaches the loss. In f32 their gradient is rounding noise
/// (~1e-9), and whether the update survives rounding depends on the random views. They are kept
/// for the official architecture (Linear with bias, then BatchNorm) and still have to get a
/// gradient; they are not required to move.
fn bias_before_batch_norm(path: &str) -> bool {
    let head = path.starts_with("projector.") || path.starts_with("predictor.");
    head && path.ends_with(".fc1.bias")
        || path.ends_with(".fc.bias") && path.contains(".mid.")
        || path == "projector.fc2.bias"
}

/// Paths of the trainable online parameters whose values in `after` equal `before`'s.
fn unmoved(before: &BTreeMap<String, Named>, after: &TrainState) -> (usize, Vec<String>) {
    let after = collect(&after.online.valid());
    let trainable: Vec<_> = before
        .keys()
        .filter(|p| !is_buffer(p) && !bias_before_batch_norm(p))
        .collect();
    (
        trainable.len(),
        trainable
            .into_iter()
            .filter(|p| values(&before[*p].flat) == values(&after[*p].flat))
            .cloned()
            .collect(),
    )
}

/// One step of `cfg` at learning rate `lr` from its initial state: every parameter gets a
/// gradient and moves, except those `cfg` freezes (`ModelConfig::frozen_paths`), which get none
/// and stay.
fn every_parameter_trains(cfg: &ExperimentConfig, lr: f64) {
    let prefixes = cfg.model.frozen_paths();
    let frozen = |p: &str| prefixes.iter().any(|f| p.starts_with(f.as_str()));
    let device = Device::flex();
    let state = TrainState::init(cfg, &device);
    let (n, bad) = untrained(&state, None);
    assert!(bad.is_empty(), "after init: {bad:?}");
    let before = collect(&state.online.valid());
    let n_frozen = before.keys().filter(|p| !is_buffer(p) && frozen(p)).count();
    assert_eq!(n_frozen == 0, prefixes.is_empty(), "{prefixes:?}");
    let (v1, v2) = views(8, 16, 0, &device);
    let grads = byol_grads(&state, v1.clone(), v2.clone());
    let (m, bad) = untrained(&state, Some(&grads));
    assert_eq!(m, n);
    let (no_gradient, bad): (Vec<_>, Vec<_>) = bad.into_iter().partition(|b| frozen(b));
    assert!(
        bad.is_empty(),
        "{} of {n} parameters get no gradient: {bad:?}",
        bad.len()
    );
    assert_eq!(no_gradient.len(), n_frozen, "frozen, yet a gradient");
    let (after, _) = train_step(state, v1, v2, lr, 0.99, &cfg.objective).unwrap();
    let (total, still) = unmoved(&before, &after);
    let (stayed, still): (Vec<_>, Vec<_>) = still.into_iter().partition(|p| frozen(p));
    assert!(
        still.is_empty(),
        "{} of {total} parameters did not move: {still:?}",
        still.len()
    );
    assert_eq!(stayed.len(), n_frozen, "frozen, yet moved");
}

#[test]
fn every_parameter_gets_a_gradient_and_moves_resnet18() {
    // γ = 1 in the basic blocks (the official initialisation), so that every block's branch gets
    // a gradient at the first step.
    let cfg = tiny(&[
        "model.encoder.arch=\"resnet18\"",
        "model.encoder.stem=\"cifar\"",
        "model.encoder.residual-gamma=\"official\"",
    ]);
    every_parameter_trains(&cfg, 0.05);
}

/// A ViT encoder (two blocks, 16 wide, 4 px patches on 16 px views, learned position
/// embeddings) through the same step: every parameter (patch projection, class token, position
/// embeddings, attention, MLP, LayerNorms, heads) gets a gradient and moves, under AdamW as MoCo
/// v3 trains ViTs.
#[test]
fn every_parameter_gets_a_gradient_and_moves_vit() {
    let cfg = tiny(&[
        "model.encoder.arch=\"vit-tiny\"",
        "model.encoder.patch-size=4",
        "model.encoder.depth=2",
        "model.encoder.width=16",
        "model.encoder.heads=2",
        "model.encoder.pos-embed=\"learned\"",
        "optim.kind=\"adamw\"",
        "optim.base-lr=1e-3",
    ]);
    let byol::model::EncoderConfig::Vit(vit) = &cfg.model.encoder else {
        panic!("a ViT config")
    };
    assert_eq!(vit.layout(), (16, 2, 2));
    every_parameter_trains(&cfg, 1e-3);
}

/// MoCo v3's frozen random patch projection (`model.encoder.freeze-patch-embedding`): the patch
/// projection gets no gradient and keeps its initial weights through an AdamW step with weight
/// decay; every other parameter trains.
#[test]
fn a_frozen_patch_embedding_gets_no_gradient_and_stays() {
    let cfg = tiny(&[
        "model.encoder.arch=\"vit-tiny\"",
        "model.encoder.patch-size=4",
        "model.encoder.depth=1",
        "model.encoder.width=16",
        "model.encoder.heads=2",
        "model.encoder.freeze-patch-embedding=true",
        "optim.kind=\"adamw\"",
        "optim.base-lr=1e-3",
    ]);
    assert_eq!(cfg.model.frozen_paths(), ["encoder.patch_embed."]);
    every_parameter_trains(&cfg, 1e-3);
}

/// SimCLR v2's 3-layer projection head (`model.projector.layers = 3`): Linear → BN → ReLU →
/// Linear → BN → ReLU → Linear, in the online and the target network, the predictor unchanged;
/// every parameter of it gets a gradient and moves.
#[test]
fn a_three_layer_projector_has_the_spec_shapes_and_trains() {
    let cfg = tiny(&[
        "model.encoder.residual-gamma=\"official\"",
        "model.projector.layers=3",
    ]);
    let device = Device::flex();
    let state = TrainState::init(&cfg, &device);
    let d = cfg.model.encoder.output_dim();
    let online = collect(&state.online.valid());
    let shape = |path: &str| {
        online
            .get(path)
            .map(|n| n.shape.clone())
            .unwrap_or_else(|| panic!("no {path}"))
    };
    // burn's Linear weight is [in, out].
    assert_eq!(shape("projector.fc1.weight"), [d, 32]);
    assert_eq!(shape("projector.mid.0.fc.weight"), [32, 32]);
    assert_eq!(shape("projector.mid.0.bn.gamma"), [32]);
    assert_eq!(shape("projector.fc2.weight"), [32, 16]);
    assert!(
        !online
            .keys()
            .any(|k| k.contains("mid.1") || k.starts_with("predictor.mid")),
        "{:?}",
        online.keys()
    );
    let target = collect(&state.target.as_ref().unwrap().valid());
    assert_eq!(target["projector.mid.0.fc.weight"].shape, [32, 32]);
    let (v1, v2) = views(8, 16, 3, &device);
    let grads = byol_grads(&state, v1.clone(), v2.clone());
    let (_, bad) = untrained(&state, Some(&grads));
    assert!(bad.is_empty(), "parameters without a gradient: {bad:?}");
    let (after, _) = train_step(state, v1, v2, 0.05, 0.99, &cfg.objective).unwrap();
    let (total, still) = unmoved(&online, &after);
    assert!(
        still.is_empty(),
        "{} of {total} parameters did not move: {still:?}",
        still.len()
    );
    let e = ExperimentConfig::load("small-cpu", &["model.projector.layers=4".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.projector.layers") && e.contains("SimCLR v2"),
        "{e}"
    );
}

/// Bottleneck blocks start with γ = 0 in their last BatchNorm, so the block's convolutions get a
/// zero gradient at the first step; the γ must train, and from the second step on everything moves.
#[test]
fn every_parameter_moves_with_zero_initialised_bottlenecks_resnet50() {
    let cfg = tiny(&[
        "model.encoder.arch=\"resnet50\"",
        "model.encoder.stem=\"imagenet\"",
        "data.image-size=32",
        "model.encoder.residual-gamma=\"official\"",
    ]);
    let device = Device::flex();
    let state = TrainState::init(&cfg, &device);
    assert!(untrained(&state, None).1.is_empty());
    let gamma =
        |s: &TrainState| values(&collect(&s.online.valid())["encoder.layer1.0.bn3.gamma"].flat);
    assert!(
        gamma(&state).iter().all(|&g| g == 0.0),
        "the last γ of a bottleneck starts at 0"
    );
    let before = collect(&state.online.valid());
    let (v1, v2) = views(8, 32, 0, &device);
    let (state, _) = train_step(state, v1, v2, 0.05, 0.99, &cfg.objective).unwrap();
    assert!(
        gamma(&state).iter().any(|&g| g != 0.0),
        "γ = 0 did not train"
    );
    let (v1, v2) = views(8, 32, 1, &device);
    let grads = byol_grads(&state, v1.clone(), v2.clone());
    let (n, bad) = untrained(&state, Some(&grads));
    assert!(
        bad.is_empty(),
        "{} of {n} parameters get no gradient at step 2: {bad:?}",
        bad.len()
    );
    let (state, _) = train_step(state, v1, v2, 0.05, 0.99, &cfg.objective).unwrap();
    let (total, still) = unmoved(&before, &state);
    assert!(
        still.is_empty(),
        "{} of {total} parameters did not move in 2 steps: {still:?}",
        still.len()
    );
}

/// A parameter that does not require a gradient (the way a layer built from a plain tensor
/// ends up) is an error of the step that names it, not a silently frozen layer.
#[test]
fn the_optimizer_refuses_a_parameter_that_would_not_train() {
    let cfg = tiny(&[]);
    let device = Device::flex();
    let mut state = TrainState::init(&cfg, &device);
    let byol::model::Encoder::ResNet(resnet) = &mut state.online.encoder else {
        panic!("the tiny config's encoder is a ResNet")
    };
    let block = &mut resnet.layer1[0];
    block.bn2 = block.bn2.clone().no_grad();
    let (v1, v2) = views(8, 16, 0, &device);
    let Err(err) = train_step(state, v1, v2, 0.05, 0.99, &cfg.objective) else {
        panic!("a frozen γ is refused")
    };
    assert!(matches!(err, Error::Untrained { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("encoder.layer1.0.bn2.gamma") && msg.contains("encoder.layer1.0.bn2.beta"),
        "{msg}"
    );
    assert!(
        !msg.contains("running"),
        "running statistics are not parameters: {msg}"
    );
}

/// The target runs BatchNorm in training mode: its output for an image depends on the other
/// images of the batch, and a step moves its running statistics (its own, not the online ones).
#[test]
fn the_target_uses_batch_statistics_and_moves_its_running_statistics() {
    let cfg = tiny(&[]);
    let device = Device::flex();
    let state = TrainState::init(&cfg, &device);
    let target = state.target.as_ref().unwrap();
    let x = normal([8, 3, 16, 16], 0.0, 1.0, 101, &device);
    let y = normal([1, 3, 16, 16], 3.0, 2.0, 102, &device);
    let changed = x.clone().slice_assign([1..2], y);
    let first = |t: Tensor<2>| -> Vec<f32> { t.slice([0..1]).into_data().try_into_vec().unwrap() };
    assert_ne!(
        first(target.forward(x)),
        first(target.forward(changed)),
        "image 0's target projection ignores the batch"
    );

    let before = collect(&state.target.as_ref().unwrap().valid());
    let online_before = collect(&state.online.valid());
    let (v1, v2) = views(8, 16, 0, &device);
    let (state, _) = train_step(state, v1, v2, 0.05, 1.0, &cfg.objective).unwrap();
    let after = collect(&state.target.as_ref().unwrap().valid());
    let online_after = collect(&state.online.valid());
    let buffers: Vec<_> = before.keys().filter(|p| is_buffer(p)).collect();
    assert!(buffers.len() >= 40, "{}", buffers.len());
    for p in buffers {
        assert_ne!(
            values(&before[p].flat),
            values(&after[p].flat),
            "target {p} did not move"
        );
        assert_ne!(
            values(&after[p].flat),
            values(&online_after[p].flat),
            "target {p} equals the online one"
        );
        assert_ne!(
            values(&online_before[p].flat),
            values(&online_after[p].flat),
            "online {p} did not move"
        );
    }
}

/// The values of every trainable parameter (BatchNorm running statistics left out), by path.
fn trainable(m: BTreeMap<String, Named>) -> BTreeMap<String, Vec<f32>> {
    m.into_iter()
        .filter(|(k, _)| !is_buffer(k))
        .map(|(k, t)| (k, values(&t.flat)))
        .collect()
}

/// `optim.predictor-lr-scale = λ`: the predictor's step is λ times the one it takes at λ = 1
/// (SGD's first step is lr·g), to the rounding of w − step; every other parameter's is the same,
/// bit for bit.
#[test]
fn the_predictor_learning_rate_is_scaled_alone() {
    let device = Device::flex();
    let (v1, v2) = views(8, 16, 7, &device);
    let step = |scale: f64| {
        let cfg = tiny(&[
            "optim.kind=\"sgd\"",
            &format!("optim.predictor-lr-scale={scale:?}"),
        ]);
        let state = TrainState::init(&cfg, &device);
        let before = trainable(collect(&state.online.valid()));
        let (after, _) =
            train_step(state, v1.clone(), v2.clone(), 0.05, 0.99, &cfg.objective).unwrap();
        (before, trainable(collect(&after.online.valid())))
    };
    let ((w0, one), (_, ten)) = (step(1.0), step(10.0));
    let mut scaled = 0;
    for (k, w) in &w0 {
        if !k.starts_with("predictor.") {
            assert_eq!(one[k], ten[k], "{k}");
            continue;
        }
        for ((w, a), b) in w.iter().zip(&one[k]).zip(&ten[k]) {
            let (d1, d10) = (a - w, b - w);
            assert!(
                (d10 - 10.0 * d1).abs() <= 12.0 * f32::EPSILON * w.abs() + 1e-6 * (10.0 * d1).abs(),
                "{k}: {d10} against 10 × {d1}"
            );
            scaled += usize::from(d1 != 0.0);
        }
    }
    assert!(scaled > 500, "the predictor's parameters moved ({scaled})");
    let e = ExperimentConfig::load("small-cpu", &["optim.predictor-lr-scale=0".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("optim.predictor-lr-scale"), "{e}");
}

/// (online, target) trainable values before and after an update.
type Update = (
    [BTreeMap<String, Vec<f32>>; 2],
    [BTreeMap<String, Vec<f32>>; 2],
);

/// Puts every BatchNorm of a module in eval mode (running statistics) without leaving the
/// autodiff device.
struct EvalMode;

impl burn::module::ModuleMapper for EvalMode {
    fn map_flag(&mut self, flag: Param<burn::module::Flag>) -> Param<burn::module::Flag> {
        flag.with_value(false)
    }
}

/// `train.accumulate = N` (the paper's protocol for smaller batches): with BatchNorm held in eval
/// mode, so that a micro-batch is normalised as the whole batch is, N micro-batches give the
/// update of the whole batch to f32 rounding, for the online network and for the target (one
/// EMA per update, not one per micro-batch). SGD, whose step scales with the gradient: a sum of
/// the micro-batches' gradients instead of their mean would be N times the step. In training
/// mode each micro-batch's own statistics make another update.
#[test]
fn micro_batches_average_to_the_update_of_the_whole_batch() {
    let cfg = tiny(&[
        "optim.kind=\"sgd\"",
        "model.encoder.residual-gamma=\"official\"",
    ]);
    let device = Device::flex();
    let (v1, v2) = views(8, 16, 5, &device);
    // (online, target) before and after one update with `n` micro-batches.
    let update = |n: usize, eval_bn: bool| {
        let mut state = TrainState::init(&cfg, &device);
        if eval_bn {
            state.online = state.online.map(&mut EvalMode);
            state.target = state.target.map(|t| Module::map(t, &mut EvalMode));
        }
        let before = [
            trainable(collect(&state.online.valid())),
            trainable(collect(&state.target.as_ref().unwrap().valid())),
        ];
        let (after, _) =
            byol::train::forward_accumulated(state, v1.clone(), v2.clone(), &cfg.objective, n)
                .apply(0.05, 0.9)
                .unwrap();
        (
            before,
            [
                trainable(collect(&after.online.valid())),
                trainable(collect(&after.target.unwrap().valid())),
            ],
        )
    };
    // The largest difference between two updates and the largest change of the first, over the
    // parameters of network `i` (0: online, 1: target).
    let compare = |a: &Update, b: &Update, i: usize| {
        let (mut diff, mut change) = (0f32, 0f32);
        for (k, w0) in &a.0[i] {
            assert_eq!(w0, &b.0[i][k], "{k}: both start from the same weights");
            for ((x0, xa), xb) in w0.iter().zip(&a.1[i][k]).zip(&b.1[i][k]) {
                change = change.max((xa - x0).abs());
                diff = diff.max((xa - xb).abs());
            }
        }
        (diff, change)
    };
    let whole = update(1, true);
    for n in [2, 4] {
        let micro = update(n, true);
        for (i, net) in ["online", "target"].iter().enumerate() {
            let (diff, change) = compare(&whole, &micro, i);
            assert!(
                change > 1e-3,
                "{net}: the update moves the weights ({change})"
            );
            assert!(
                diff <= 1e-6 * change,
                "{net}, {n} micro-batches: {diff} from the whole batch's update, whose largest change is {change}"
            );
        }
    }
    let (diff, change) = compare(&update(1, false), &update(4, false), 0);
    assert!(
        diff > 1e-2 * change,
        "in training mode the micro-batches' own statistics give another update ({diff} against {change})"
    );
}
