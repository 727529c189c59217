//! Behaviour of the training machinery on `flex`: EMA, stop-gradient, BatchNorm independence,
//! checkpoints and resume, bad input, and learning on a real CIFAR-10 subset.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use byol::ExperimentConfig;
use byol::ema;
use byol::model::params::{Named, collect, is_buffer};
use byol::train::{Observer, RunOptions, TrainState, checkpoint, pretrain, train_step};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{Quiet, tiny, tiny_overrides, tiny_vit, tmp};

fn values(t: &Tensor<1>) -> Vec<f32> {
    t.clone().into_data().try_into_vec().unwrap()
}

/// Two [b, 3, s, s] views of standard normal values, the same in every run (a seeded generator of
/// their own: burn's shared one would depend on the tests running beside).
fn views(b: usize, s: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
    use rand::Rng;
    let view = |which: u64| {
        let mut r = byol::rng::rng(which, byol::rng::Stream::Augment, &[b as u64, s as u64]);
        let v: Vec<f32> = (0..b * 3 * s * s)
            .map(|_| {
                let (u1, u2): (f64, f64) = (r.random_range(f64::MIN_POSITIVE..1.0), r.random());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        Tensor::<4>::from_data(burn::tensor::TensorData::new(v, [b, 3, s, s]), device)
    };
    (view(1), view(2))
}

#[test]
fn ema_update_is_exact_and_skips_buffers() {
    let cfg = tiny(&[]);
    let device = Device::flex();
    let state = TrainState::init(&cfg, &device);
    let before = collect(&state.target.as_ref().unwrap().valid());
    let theta = collect(&state.online.valid());
    let target = ema::update(state.target.unwrap(), &state.online, 0.7);
    let after = collect(&target.valid());
    let mut checked = 0;
    for (path, xi) in &before {
        let new = values(&after[path].flat);
        let old = values(&xi.flat);
        if is_buffer(path) {
            assert_eq!(
                new, old,
                "{path}: BatchNorm statistics of the target are its own"
            );
            continue;
        }
        let th = values(&theta[path].flat);
        for i in 0..old.len() {
            let want = 0.7 * old[i] + 0.3 * th[i];
            assert!(
                (new[i] - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{path}[{i}]"
            );
        }
        checked += 1;
    }
    assert!(checked > 20);
}

#[test]
fn target_gets_no_gradient_and_tau_one_keeps_it_bit_identical() {
    // γ = 1 in the basic blocks, so that every online parameter moves at the first step.
    let cfg = tiny(&["model.encoder.residual-gamma=\"official\""]);
    let device = Device::flex();
    let state = TrainState::init(&cfg, &device);
    let before = collect(state.target.as_ref().unwrap());
    let online_before = collect(&state.online);
    let (v1, v2) = views(8, 16, &device);
    let (state, m) = train_step(state, v1, v2, 0.5, 1.0, &cfg.objective).unwrap();
    assert!(m.loss.into_scalar::<f32>().is_finite());
    // The target's parameters never enter autodiff…
    struct NoGrad(usize);
    impl burn::module::ModuleVisitor for NoGrad {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            assert!(!p.val().is_autodiff() && !p.is_require_grad());
            self.0 += 1;
        }
    }
    let mut v = NoGrad(0);
    state.target.as_ref().unwrap().visit(&mut v);
    assert!(v.0 > 0);
    // …and with τ = 1 they do not move, while the online network did.
    let after = collect(state.target.as_ref().unwrap());
    for (path, t) in &before {
        if !is_buffer(path) {
            assert_eq!(values(&t.flat), values(&after[path].flat), "{path}");
        }
    }
    let online_after = collect(&state.online);
    // The biases before a BatchNorm (each head's first Linear, and the projector's last, which
    // feeds only the predictor's first) have a gradient of zero in exact arithmetic and rounding
    // noise in f32, so they may or may not move (tests/learning.rs, `bias_before_batch_norm`).
    let before_bn = |p: &str| p.ends_with(".fc1.bias") || p == "projector.fc2.bias";
    let unmoved: Vec<_> = online_before
        .iter()
        .filter(|(p, t)| {
            !is_buffer(p) && !before_bn(p) && values(&t.flat) == values(&online_after[*p].flat)
        })
        .map(|(p, _)| p)
        .collect();
    assert!(
        unmoved.is_empty(),
        "online tensors that did not move: {unmoved:?}"
    );
}

/// τ = 0: after every step the target's parameters are the online network's (a stop-gradient
/// copy); its BatchNorm statistics stay its own.
#[test]
fn tau_zero_makes_the_target_equal_to_the_online_network_after_each_step() {
    let cfg = tiny(&["target.tau-schedule=\"constant\"", "target.tau-base=0.0"]);
    let device = Device::flex();
    let mut state = TrainState::init(&cfg, &device);
    for _ in 0..2 {
        let (v1, v2) = views(8, 16, &device);
        state = train_step(
            state,
            v1,
            v2,
            0.3,
            byol::ema::tau_at(&cfg.target, 0, 10),
            &cfg.objective,
        )
        .unwrap()
        .0;
        let (on, tg) = (
            collect(&state.online),
            collect(state.target.as_ref().unwrap()),
        );
        let mut checked = 0;
        for (path, t) in &tg {
            if !is_buffer(path) {
                assert_eq!(values(&t.flat), values(&on[path].flat), "{path}");
                checked += 1;
            }
        }
        assert!(checked > 20);
    }
}

/// MoCo's queue: the step enqueues 2B keys, and a checkpoint keeps the keys and the position.
#[test]
fn moco_queue_advances_and_survives_a_checkpoint() {
    let cfg = tiny(&[
        "objective.kind=\"moco\"",
        "objective.queue-size=40",
        "objective.temperature=0.2",
        "model.use-predictor=false",
        "target.tau-schedule=\"constant\"",
        "target.tau-base=0.999",
    ]);
    let device = Device::flex();
    let state = TrainState::init(&cfg, &device);
    assert!(state.online.predictor.is_none());
    assert_eq!(state.queue.as_ref().unwrap().len(), 40);
    let (v1, v2) = views(8, 16, &device);
    let (state, m) = train_step(state, v1, v2, 0.1, 0.999, &cfg.objective).unwrap();
    assert!(m.loss.into_scalar::<f32>().is_finite());
    assert_eq!(state.queue.as_ref().unwrap().ptr, 16);
    let dir = tmp("moco-ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.safetensors");
    checkpoint::save(&path, &state, &cfg).unwrap();
    let back = checkpoint::read(&path).unwrap().state(&device).unwrap();
    let (q, r) = (state.queue.as_ref().unwrap(), back.queue.as_ref().unwrap());
    assert_eq!(q.ptr, r.ptr);
    assert_eq!(
        q.keys.clone().into_data().try_into_vec::<f32>().unwrap(),
        r.keys.clone().into_data().try_into_vec::<f32>().unwrap()
    );
    // And a MoCo run resumes bit-identically.
    let opts = RunOptions {
        resume: false,
        compare_random: false,
        max_steps: Some(4),
        ..Default::default()
    };
    let full = tmp("moco-full");
    pretrain(&cfg, &full, &opts, &mut Quiet).unwrap();
    let half = tmp("moco-half");
    pretrain(
        &cfg,
        &half,
        &RunOptions {
            max_steps: Some(2),
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    pretrain(
        &cfg,
        &half,
        &RunOptions {
            resume: true,
            ..opts
        },
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(losses(&full), losses(&half));
}

/// SimCLR: no target network at all, gradients through both branches; checkpoints hold no target.
#[test]
fn simclr_has_no_target_and_learns_through_both_branches() {
    // Plain SGD without weight decay: the first step is w − lr·g exactly.
    let cfg = tiny(&[
        "objective.kind=\"nt-xent\"",
        "objective.temperature=0.5",
        "model.use-predictor=false",
        "target.mode=\"none\"",
        "optim.kind=\"sgd\"",
        "optim.weight-decay=0.0",
    ]);
    let device = Device::flex();
    let state = TrainState::init(&cfg, &device);
    assert!(state.target.is_none() && state.queue.is_none());
    let (v1, v2) = views(8, 16, &device);
    // The gradient of the projector's last weight with the targets as part of the graph (both
    // branches), and with them detached (one branch, as a stop-gradient would give).
    let grad = |detach: bool| -> Vec<f32> {
        let o1 = state.online.forward(v1.clone().autodiff());
        let o2 = state.online.forward(v2.clone().autodiff());
        let (z1, z2) = if detach {
            (
                o1.projection.clone().detach(),
                o2.projection.clone().detach(),
            )
        } else {
            (o1.projection.clone(), o2.projection.clone())
        };
        let grads = byol::loss::nt_xent(o1.prediction, o2.prediction, z1, z2, 0.5).backward();
        state
            .online
            .projector
            .fc2
            .weight
            .val()
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec()
            .unwrap()
    };
    let (both, one) = (grad(false), grad(true));
    let w0: Vec<f32> = state
        .online
        .projector
        .fc2
        .weight
        .val()
        .into_data()
        .try_into_vec()
        .unwrap();
    let (state, m) = train_step(state, v1, v2, 1.0, 1.0, &cfg.objective).unwrap();
    let w1: Vec<f32> = state
        .online
        .projector
        .fc2
        .weight
        .val()
        .into_data()
        .try_into_vec()
        .unwrap();
    let step: Vec<f32> = w0.iter().zip(&w1).map(|(a, b)| a - b).collect();
    let dist = |g: &[f32]| {
        step.iter()
            .zip(g)
            .map(|(s, g)| (s - g).abs())
            .fold(0f32, f32::max)
            / g.iter().fold(0f32, |m, g| m.max(g.abs()))
    };
    assert!(
        dist(&both) < 1e-4,
        "the step is not w − lr·g with both branches: {}",
        dist(&both)
    );
    assert!(
        dist(&one) > 0.1,
        "the gradient through the targets is missing: {}",
        dist(&one)
    );
    // Initial NT-Xent is about log(2B − 1) for unrelated embeddings.
    let l = m.loss.into_scalar::<f32>();
    assert!(l > 1.0 && l < 2.0 * (15f32).ln(), "{l}");
    let dir = tmp("simclr-ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.safetensors");
    checkpoint::save(&path, &state, &cfg).unwrap();
    let back = checkpoint::read(&path).unwrap().state(&device).unwrap();
    assert!(back.target.is_none());
}

#[test]
fn target_batchnorm_state_is_independent_of_the_online_one() {
    let cfg = tiny(&["target.init=\"copy\""]);
    let device = Device::flex();
    let state = TrainState::init(&cfg, &device);
    // A deep copy: same values at first…
    let on = collect(&state.online.valid());
    let tg = collect(&state.target.as_ref().unwrap().valid());
    for (path, t) in &tg {
        assert_eq!(values(&t.flat), values(&on[path].flat), "{path}");
    }
    // …then a forward pass of the online network in training mode updates only its own
    // running statistics.
    let x = Tensor::random(
        [8, 3, 16, 16],
        Distribution::Normal(2.0, 3.0),
        &device.clone().autodiff(),
    );
    let _ = state.online.forward(x);
    let on2 = collect(&state.online.valid());
    let tg2 = collect(&state.target.as_ref().unwrap().valid());
    let path = "encoder.bn1.running_mean";
    assert_ne!(
        values(&on2[path].flat),
        values(&on[path].flat),
        "online statistics should move"
    );
    assert_eq!(
        values(&tg2[path].flat),
        values(&tg[path].flat),
        "target statistics must not move"
    );
    // And the other way round.
    let _ = state.target.as_ref().unwrap().forward(Tensor::random(
        [8, 3, 16, 16],
        Distribution::Normal(-1.0, 2.0),
        &device,
    ));
    let on3 = collect(&state.online.valid());
    assert_eq!(values(&on3[path].flat), values(&on2[path].flat));
}

#[test]
fn checkpoint_round_trip_is_exact() {
    let cfg = tiny(&["optim.kind=\"lars\""]);
    let device = Device::flex();
    let state = TrainState::init(&cfg, &device);
    let (v1, v2) = views(8, 16, &device);
    let (state, _) = train_step(state, v1, v2, 0.1, 0.9, &cfg.objective).unwrap();
    let dir = tmp("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.safetensors");
    checkpoint::save(&path, &state, &cfg).unwrap();
    let loaded = checkpoint::read(&path).unwrap();
    assert_eq!(loaded.config, cfg);
    assert_eq!(loaded.step, 1);
    let back = loaded.state(&device).unwrap();
    for (a, b) in [
        (
            collect(&state.online.valid()),
            collect(&back.online.valid()),
        ),
        (
            collect(&state.target.as_ref().unwrap().valid()),
            collect(&back.target.valid()),
        ),
    ] {
        assert_eq!(a.len(), b.len());
        for (p, t) in &a {
            assert_eq!(values(&t.flat), values(&b[p].flat), "{p}");
        }
    }
    assert_eq!(state.optim.state.len(), back.optim.state.len());
    for (p, slots) in &state.optim.state {
        for (x, y) in slots.iter().zip(&back.optim.state[p]) {
            assert_eq!(values(x), values(y), "optimizer state of {p}");
        }
    }
    // A flipped byte is detected and named.
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let err = checkpoint::read(&path).err().unwrap().to_string();
    assert!(
        err.contains("c.safetensors") && err.contains("checksum"),
        "{err}"
    );
    // So is a truncated one.
    std::fs::write(&path, &bytes[..n / 2]).unwrap();
    assert!(
        checkpoint::read(&path)
            .err()
            .unwrap()
            .to_string()
            .contains("c.safetensors")
    );
}

/// The tensors of the online network of the newest checkpoint of the run in `dir`, by path.
fn latest_online(dir: &Path) -> BTreeMap<String, Named> {
    let (loaded, _) = checkpoint::read_latest(dir).unwrap();
    collect(&loaded.online(&Device::flex()).unwrap())
}

/// The online networks of the newest checkpoints of runs `a` and `b` are the same, bit for bit.
fn same_online_weights(a: &Path, b: &Path) {
    let (oa, ob) = (latest_online(a), latest_online(b));
    assert_eq!(oa.len(), ob.len());
    for (p, t) in &oa {
        assert_eq!(values(&t.flat), values(&ob[p].flat), "{p}");
    }
}

fn losses(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {} {}", v["step"], v["loss"], v["projection_std"])
        })
        .collect()
}

#[test]
fn n_steps_equal_half_then_resume_then_half() {
    let cfg = tiny(&[]);
    let full = tmp("full");
    let opts = RunOptions {
        resume: false,
        compare_random: false,
        max_steps: None,
        ..Default::default()
    };
    let r = pretrain(&cfg, &full, &opts, &mut Quiet).unwrap();
    assert_eq!(r.steps, 10);
    let half = tmp("half");
    let r = pretrain(
        &cfg,
        &half,
        &RunOptions {
            max_steps: Some(5),
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(r.steps, 5);
    assert!(r.knn.is_none());
    // Resuming with a config that changes the trajectory is refused, naming the fields…
    let other = tiny(&["optim.base-lr=0.5", "augment.view2.solarize-prob=0.1"]);
    let err = pretrain(
        &other,
        &half,
        &RunOptions {
            resume: true,
            ..opts.clone()
        },
        &mut Quiet,
    )
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("optim.base-lr")
            && err.contains("augment.view2.solarize-prob")
            && err.contains("checkpoint"),
        "{err}"
    );
    // …one that changes only logging is not.
    let r = pretrain(
        &tiny(&["train.log-every=1", "eval.knn.k=3"]),
        &half,
        &RunOptions {
            resume: true,
            max_steps: Some(5),
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(r.steps, 5);
    let r = pretrain(
        &cfg,
        &half,
        &RunOptions {
            resume: true,
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(r.steps, 10);
    let (a, b) = (losses(&full), losses(&half));
    assert_eq!(a.len(), 10);
    assert_eq!(a, b, "same loss sequence with and without the interruption");
    same_online_weights(&full, &half);
    // Starting a new run over an existing one is refused.
    let err = pretrain(&cfg, &full, &opts, &mut Quiet)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
    // Every start and resume is recorded with the step it started from and the CPU it ran on;
    // the refused ones are not.
    let starts = |dir: &std::path::Path| -> Vec<(u64, String)> {
        std::fs::read_to_string(dir.join("invocations.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["start_step"].as_u64().unwrap(),
                    v["cpu"]["simd"].to_string(),
                )
            })
            .collect()
    };
    let simd = format!("{:?}", byol::backend::cpu().simd);
    let at = |steps: &[u64]| -> Vec<(u64, String)> {
        steps.iter().map(|&s| (s, simd.clone())).collect()
    };
    assert_eq!(starts(&half), at(&[0, 5, 5]));
    assert_eq!(starts(&full), at(&[0]));
}

/// A ViT encoder through the same loop: checkpoints, a resume that continues bit for bit
/// (N steps = N/2 + resume + N/2), and the run's closing kNN evaluation; the same with learned
/// position embeddings and a frozen patch projection, whose evaluation at another image size is
/// refused with the field named (its embeddings are for the run's patches).
#[test]
fn a_vit_run_resumes_bit_identically_and_is_evaluated() {
    vit_resumes("vit", &[]);
    let dir = vit_resumes(
        "vit-learned",
        &[
            "model.encoder.pos-embed=\"learned\"",
            "model.encoder.freeze-patch-embedding=true",
        ],
    );
    let settings = byol::workflow::Settings {
        set: vec!["data.image-size=8".into()],
        ..Default::default()
    };
    let e = byol::workflow::Evaluation::from_checkpoint(&dir, &settings, |_| {}, false)
        .err()
        .expect("another image size is refused")
        .to_string();
    assert!(e.contains("data.image-size") && e.contains("16 px"), "{e}");
}

/// The baselines on a ViT through the same code: SimCLR (no target, no predictor, NT-Xent) and
/// MoCo v2 (a copied key encoder, a queue) train its encoder (every ViT tensor moves from its
/// random initialisation) and are evaluated.
#[test]
fn simclr_and_moco_v2_train_a_vit() {
    let device = Device::flex();
    let simclr: &[&str] = &[
        "model.use-predictor=false",
        "target.mode=\"none\"",
        "objective.kind=\"nt-xent\"",
        "objective.temperature=0.5",
    ];
    let moco: &[&str] = &[
        "model.use-predictor=false",
        "target.init=\"copy\"",
        "target.tau-schedule=\"constant\"",
        "objective.kind=\"moco\"",
        "objective.temperature=0.2",
        "objective.queue-size=32",
    ];
    for (tag, objective) in [("vit-simclr", simclr), ("vit-moco", moco)] {
        let cfg = tiny_vit(objective);
        let dir = tmp(tag);
        let r = pretrain(&cfg, &dir, &RunOptions::default(), &mut Quiet).unwrap();
        assert!(r.knn.is_some(), "{tag}: evaluated");
        let start = collect(&byol::train::random_init_online(&cfg, &device).encoder);
        let end = latest_online(&dir);
        for (p, t) in &start {
            let at = format!("encoder.{p}");
            assert_ne!(
                values(&t.flat),
                values(&end[&at].flat),
                "{tag}: {at} did not move"
            );
        }
    }
}

/// A tiny ViT run of 10 steps with `extra`, and its 5 + resume + 5 twin, compared; the
/// uninterrupted run's directory.
fn vit_resumes(tag: &str, extra: &[&str]) -> PathBuf {
    let cfg = tiny_vit(extra);
    let opts = RunOptions {
        resume: false,
        compare_random: false,
        max_steps: None,
        ..Default::default()
    };
    let full = tmp(&format!("{tag}-full"));
    let r = pretrain(&cfg, &full, &opts, &mut Quiet).unwrap();
    assert_eq!(r.steps, 10);
    let knn = r.knn.expect("a finished run is evaluated");
    assert!(knn.top1 > 0.0 && knn.top1 <= 1.0, "{knn:?}");
    let half = tmp(&format!("{tag}-half"));
    let half_opts = RunOptions {
        max_steps: Some(5),
        ..opts.clone()
    };
    pretrain(&cfg, &half, &half_opts, &mut Quiet).unwrap();
    let resumed = RunOptions {
        resume: true,
        ..opts.clone()
    };
    assert_eq!(
        pretrain(&cfg, &half, &resumed, &mut Quiet).unwrap().steps,
        10
    );
    assert_eq!(losses(&full), losses(&half));
    same_online_weights(&full, &half);
    full
}

/// `train.accumulate`: a run of micro-batches resumes bit-identically at an update boundary
/// (N steps = N/2 + resume + N/2), and is another run than the whole batch's (each micro-batch
/// has its own BatchNorm statistics).
#[test]
fn accumulated_runs_resume_bit_identically() {
    let cfg = tiny(&["train.accumulate=4"]);
    let opts = RunOptions {
        resume: false,
        compare_random: false,
        max_steps: Some(4),
        ..Default::default()
    };
    let full = tmp("acc-full");
    pretrain(&cfg, &full, &opts, &mut Quiet).unwrap();
    let half = tmp("acc-half");
    pretrain(
        &cfg,
        &half,
        &RunOptions {
            max_steps: Some(2),
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    let r = pretrain(
        &cfg,
        &half,
        &RunOptions {
            resume: true,
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(r.steps, 4);
    assert_eq!(
        losses(&full),
        losses(&half),
        "same loss sequence with and without the interruption"
    );
    same_online_weights(&full, &half);
    let whole = tmp("acc-whole");
    pretrain(&tiny(&[]), &whole, &opts, &mut Quiet).unwrap();
    assert_ne!(
        losses(&whole)[0],
        losses(&full)[0],
        "the first step's loss: micro-batches of 4 normalised on their own against the batch of 16"
    );
}

/// With the view operations batched on the device: the same resume guarantee, and the same
/// training as the host placement up to the 1e-5 agreement of the two pipelines.
#[test]
fn device_placement_resumes_bit_identically_and_matches_the_host_placement() {
    let cfg = tiny(&["augment.placement=\"device\""]);
    let opts = RunOptions {
        resume: false,
        compare_random: false,
        max_steps: None,
        ..Default::default()
    };
    let full = tmp("dev-full");
    pretrain(
        &cfg,
        &full,
        &RunOptions {
            max_steps: Some(6),
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    let half = tmp("dev-half");
    pretrain(
        &cfg,
        &half,
        &RunOptions {
            max_steps: Some(3),
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    pretrain(
        &cfg,
        &half,
        &RunOptions {
            resume: true,
            max_steps: Some(6),
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(losses(&full), losses(&half));
    let host = tmp("host-full");
    pretrain(
        &tiny(&["augment.placement=\"host\""]),
        &host,
        &RunOptions {
            max_steps: Some(1),
            ..opts
        },
        &mut Quiet,
    )
    .unwrap();
    let first = |d: &Path| -> f64 {
        let line = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        serde_json::from_str::<serde_json::Value>(line.lines().next().unwrap()).unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    let (a, b) = (first(&full), first(&host));
    assert!(
        (a - b).abs() < 1e-3 * a.abs(),
        "first loss: device {a}, host {b}"
    );
}

#[test]
fn bad_inputs_give_clear_errors() {
    let cfg = tiny(&["train.batch-size=1000"]);
    let err = pretrain(&cfg, &tmp("big-batch"), &RunOptions::default(), &mut Quiet)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("train.batch-size") && err.contains("larger than"),
        "{err}"
    );
    let cfg = tiny(&[
        "data.source=\"folder\"",
        "data.path=\"/nonexistent/images\"",
    ]);
    let err = pretrain(&cfg, &tmp("missing"), &RunOptions::default(), &mut Quiet)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("/nonexistent/images") && err.contains("does not exist"),
        "{err}"
    );
    let err = ExperimentConfig::load("small-cpu", &["train.bogus=1".into()])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("bogus"), "{err}");
    let err = pretrain(
        &tiny(&[]),
        Path::new("/proc/byol-not-writable"),
        &RunOptions::default(),
        &mut Quiet,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("/proc/byol-not-writable"), "{err}");
    // Out-of-range values and wrong types, each rejected before any work, naming the field.
    for (set, field, says) in [
        ("optim.base-lr=-0.1", "optim.base-lr", ""),
        ("target.tau-base=1.5", "target.tau-base", "[0, 1]"),
        ("train.batch-size=0", "train.batch-size", ""),
        (
            "train.accumulate=0",
            "train.accumulate",
            "equal micro-batches",
        ),
        (
            "train.accumulate=3",
            "train.accumulate",
            "does not split 128 images",
        ),
        (
            "train.accumulate=128",
            "train.accumulate",
            "at least 2 images",
        ),
        (
            "augment.view1.crop-scale=[0.9, 0.1]",
            "augment.view1.crop-scale",
            "min ≤ max",
        ),
        (
            "objective.temperature=0",
            "objective.temperature",
            "positive",
        ),
        ("objective.beta=-1", "objective.beta", "≥ 0"),
        ("train.epochs=\"ten\"", "train.epochs", "expected u64"),
        ("train.on-non-finite=\"ignore\"", "ignore", ""),
        ("target.mode=\"none\"", "target.mode", "moco"),
        ("data.shuffle-buffer=0", "data.shuffle-buffer", "at least 1"),
        (
            "data.prefetch-batches=0",
            "data.prefetch-batches",
            "at least 1",
        ),
        (
            "data.test-path=\"t\"",
            "data.test-path",
            "not read with source = \"synthetic\" (only with shards)",
        ),
        (
            "data.path=\"p\"",
            "data.path",
            "not read with source = \"synthetic\"",
        ),
    ] {
        let mut o: Vec<String> = vec![set.to_string()];
        if field == "target.mode" {
            o.push("objective.kind=\"moco\"".into());
        }
        if field == "data.shuffle-buffer" {
            o.splice(
                0..0,
                [
                    "data.source=\"shards\"".to_string(),
                    "data.path=\"s\"".into(),
                ],
            );
        }
        let err = ExperimentConfig::load("small-cpu", &o)
            .err()
            .unwrap_or_else(|| panic!("{set} accepted"))
            .to_string();
        assert!(err.contains(field) && err.contains(says), "{set}: {err}");
    }
}

fn cifar10() -> PathBuf {
    std::env::var_os("BYOL_CIFAR10")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cifar10")
        })
}

/// The end-to-end check that the encoder learns on real images: BYOL on 5,000 CIFAR-10 training
/// images (ResNet-18 at base width 8, 312 steps of 128, about 2.5 minutes on 2 cores), then kNN
/// on 2,000 test images against the random-init encoder of the same seed, and the online linear
/// probe trained beside it. Measured (flex is
/// deterministic): 28.35 % against 22.05 %, a gain of 6.30 points. The bound, 5 points, leaves
/// room for a change of the kernels' arithmetic order (earlier kernel changes moved the main
/// job's kNN by up to 1.4 points). It catches an encoder that does not learn, not every way of
/// learning less: with the frozen-γ bug (block branches frozen, stem and shortcuts training) this
/// budget measured 27.40 % against 22.05 %. That bug is caught by `tests/learning.rs` and
/// `tests/parity.rs`.
#[test]
fn byol_beats_random_init_on_cifar10() {
    let root = cifar10();
    assert!(
        root.join("train").is_dir(),
        "CIFAR-10 ImageFolder not found at {} (set BYOL_CIFAR10)",
        root.display()
    );
    let path = format!("data.path={:?}", root.to_string_lossy());
    let o: Vec<String> = [
        "data.source=\"folder\"",
        &path,
        "data.max-train=5000",
        "data.max-test=2000",
        "train.batch-size=128",
        "train.epochs=8",
        "train.checkpoint-every=0",
        "optim.warmup-epochs=0.5",
        "model.encoder.residual-gamma=\"zero\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = ExperimentConfig::load("small-cpu", &o).unwrap();
    assert_eq!(cfg.model.encoder.resnet("").unwrap().base_width, 8);
    let dir = tmp("cifar");
    let r = pretrain(
        &cfg,
        &dir,
        &RunOptions {
            compare_random: true,
            ..Default::default()
        },
        &mut Quiet,
    )
    .unwrap();
    assert_eq!((r.train_images, r.test_images, r.steps), (5000, 2000, 312));
    let l: Vec<f64> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|s| {
            serde_json::from_str::<serde_json::Value>(s).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let first = l[..5].iter().sum::<f64>() / 5.0;
    let last = l[l.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(
        last < first - 1.0,
        "loss did not decrease: first {first:.4}, last {last:.4}"
    );
    let (trained, random) = (r.knn.unwrap().top1, r.random_init_knn.unwrap().top1);
    let probe = r
        .online_linear_top1
        .expect("the online probe is on by default");
    println!(
        "kNN top-1: trained {:.2} %, random init {:.2} %; online linear probe {:.2} %",
        100.0 * trained,
        100.0 * random,
        100.0 * probe
    );
    assert!(
        trained - random > 0.05,
        "trained {trained:.4} is not 5 points above random init {random:.4}"
    );
    // The online linear probe learns beside it: measured 23.80 % (chance: 10 %). The bound, 18 %,
    // catches a probe that does not learn or sees its labels out of order (chance level).
    assert!(probe > 0.18, "online linear probe {probe:.4}");
    // The kNN margin alone is also passed by a constant random target (τ = 1: +5.35 points at this
    // budget) and was passed by the frozen-γ bug (residual branches that never opened). Two
    // checks that fail on those: the target moved away from its initialisation by the EMA (a
    // constant target stays bit-identical to it), and every residual branch's last BatchNorm γ,
    // initialised at 0 here (`residual-gamma = zero`), trained away from 0 (a frozen γ stays 0).
    let device = Device::flex();
    let (end, _) = checkpoint::read_latest(&dir).unwrap();
    let end = end.state(&device).unwrap();
    let start = TrainState::init(&cfg, &device);
    let (moved, init) = (
        collect(end.target.as_ref().unwrap()),
        collect(start.target.as_ref().unwrap()),
    );
    let weights = |m: &BTreeMap<String, Named>| -> Vec<f32> {
        m.iter()
            .filter(|(p, _)| p.ends_with(".weight"))
            .flat_map(|(_, t)| values(&t.flat))
            .collect()
    };
    let (a, b) = (weights(&moved), weights(&init));
    let change = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>()
        / b.iter().map(|y| y.abs()).sum::<f32>();
    println!("the target's weights moved by {change:.4} of their initial L1 norm");
    // Measured 1.20 (the EMA moves an independently initialised target towards the online
    // network); a constant target gives exactly 0.
    assert!(
        change > 0.1,
        "the target's weights moved by only {change:.4} of their initial norm: no EMA reached them"
    );
    let gammas: Vec<(String, Vec<f32>)> = collect(&end.online)
        .into_iter()
        .filter(|(p, _)| p.contains(".layer") && p.ends_with(".bn2.gamma"))
        .map(|(p, t)| (p, values(&t.flat)))
        .collect();
    assert_eq!(
        gammas.len(),
        8,
        "ResNet-18 has 8 basic blocks: {:?}",
        gammas.iter().map(|g| &g.0).collect::<Vec<_>>()
    );
    for (p, g) in &gammas {
        assert!(
            g.iter().any(|&v| v != 0.0),
            "{p} is still all zero: its residual branch never opened"
        );
    }
}

#[test]
fn linear_probe_leaves_the_encoder_bit_identical() {
    let cfg = tiny(&["eval.linear.epochs=3", "eval.linear.batch-size=16"]);
    let device = Device::flex();
    let state = TrainState::init(&cfg, &device);
    // Move the BatchNorm statistics away from their initial values first.
    let (v1, v2) = views(8, 16, &device);
    let (state, _) = train_step(state, v1, v2, 0.1, 0.99, &cfg.objective).unwrap();
    let encoder = state.online.encoder;
    let before = collect(&encoder.valid());
    let splits = byol::data::load(&cfg.data, cfg.seed).unwrap();
    let r = byol::train::linear_of_encoder(&encoder, &cfg, &splits.train, &splits.test, &device)
        .unwrap();
    assert_eq!(r.sweep.len(), 5);
    let after = collect(&encoder.valid());
    assert_eq!(before.len(), after.len());
    for (p, t) in &before {
        assert_eq!(
            values(&t.flat),
            values(&after[p].flat),
            "{p} changed during the linear probe"
        );
    }
}

#[test]
fn export_then_import_gives_the_same_features() {
    for arch in ["resnet18", "resnet50"] {
        let cfg = tiny(&[
            &format!("model.encoder.arch=\"{arch}\""),
            "model.encoder.stem=\"imagenet\"",
            "data.image-size=32",
        ]);
        let device = Device::flex();
        let state = TrainState::init(&cfg, &device);
        let (v1, v2) = views(8, 32, &device);
        let (state, _) = train_step(state, v1, v2, 0.1, 0.99, &cfg.objective).unwrap();
        let encoder = state.online.encoder;
        let dir = tmp(&format!("export-{arch}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("encoder.safetensors");
        byol::model::export::export_encoder(&encoder, &cfg.model.encoder, 32, None, &file).unwrap();
        // torchvision's names are in the file.
        let bytes = std::fs::read(&file).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let names: Vec<String> = st.names().into_iter().map(String::from).collect();
        assert!(
            names.contains(&"layer2.0.downsample.0.weight".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"layer1.0.bn1.running_mean".to_string()));
        assert!(names.contains(&"bn1.weight".to_string()));
        let back = byol::model::export::import_encoder(&cfg.model.encoder, &file, &device).unwrap();
        let x = Tensor::<4>::random([4, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let a: Vec<f32> = encoder
            .valid()
            .forward(x.clone())
            .into_data()
            .try_into_vec()
            .unwrap();
        let b: Vec<f32> = back.valid().forward(x).into_data().try_into_vec().unwrap();
        assert_eq!(a, b, "{arch}");
    }
}

#[test]
fn collapse_warning_fires_below_the_threshold() {
    struct Capture(Vec<String>);
    impl Observer for Capture {
        fn on_message(&mut self, m: &str) {
            self.0.push(m.to_string());
        }
    }
    // A threshold at 0.999 of the healthy 1/√P: any real run stays under it.
    let cfg = tiny(&[
        "train.collapse-fraction=0.999",
        "train.collapse-patience=3",
        "train.epochs=1",
    ]);
    let mut obs = Capture(Vec::new());
    pretrain(&cfg, &tmp("collapse"), &RunOptions::default(), &mut obs).unwrap();
    assert_eq!(
        obs.0
            .iter()
            .filter(|m| m.contains("possible collapse at step 3"))
            .count(),
        1,
        "{:?}",
        obs.0
    );
    // The default threshold (0.1 of healthy) stays silent on the same run.
    let mut obs = Capture(Vec::new());
    let dir = tmp("no-collapse");
    pretrain(
        &tiny(&["train.epochs=1"]),
        &dir,
        &RunOptions::default(),
        &mut obs,
    )
    .unwrap();
    assert!(obs.0.iter().all(|m| !m.contains("collapse")), "{:?}", obs.0);
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    // run.json names the revision the library was built from: in a git checkout, HEAD's commit
    // (the build script runs again when a commit moves the branch; with `-dirty` when the
    // library's sources had changes), and "unknown" only outside one.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let recorded = run["git_revision"].as_str().unwrap_or_default();
    match head {
        Some(head) => assert_eq!(
            recorded.trim_end_matches("-dirty"),
            head,
            "run.json says {recorded:?} in a checkout at {head}"
        ),
        None => assert_eq!(recorded, "unknown"),
    }
}

#[test]
fn resume_falls_back_past_a_corrupt_checkpoint_and_keeps_k() {
    let cfg = tiny(&["train.checkpoint-every=2", "train.keep-checkpoints=2"]);
    let full = tmp("fallback-full");
    pretrain(&cfg, &full, &RunOptions::default(), &mut Quiet).unwrap();
    let steps: Vec<u64> = checkpoint::list(&full).iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, vec![10, 8], "only the newest two are kept");
    let part = tmp("fallback-part");
    pretrain(
        &cfg,
        &part,
        &RunOptions {
            max_steps: Some(6),
            ..Default::default()
        },
        &mut Quiet,
    )
    .unwrap();
    // The newest checkpoint (step 6) is damaged: resume falls back to step 4.
    let newest = checkpoint::path_for(&part, 6);
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 3]).unwrap();
    let (l, p) = checkpoint::read_latest(&part).unwrap();
    assert_eq!((l.step, p), (4, checkpoint::path_for(&part, 4)));
    // The config for `--resume` comes from the header alone: the truncated file's still reads…
    let (c, p) = checkpoint::read_latest_config(&part).unwrap();
    assert_eq!((c, p), (cfg.clone(), newest.clone()));
    // …and a file whose header is gone is skipped.
    std::fs::write(&newest, b"garbage").unwrap();
    let (_, p) = checkpoint::read_latest_config(&part).unwrap();
    assert_eq!(p, checkpoint::path_for(&part, 4));
    let r = pretrain(
        &cfg,
        &part,
        &RunOptions {
            resume: true,
            ..Default::default()
        },
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(r.steps, 10);
    // Data order and augmentations are functions of the step: the repeated steps 5-6 and the
    // rest give the uninterrupted run's final weights, bit for bit.
    same_online_weights(&full, &part);
}

/// `ablate` trains each variant at each seed, summarises the seeds, writes the reports, skips
/// finished runs on a rerun and refuses stale ones.
#[test]
fn ablate_runs_variants_writes_reports_and_skips_finished_ones() {
    use byol::ablate::{AblationOptions, Grid, ablate};
    use byol::workflow::Settings;
    let dir = tmp("ablate");
    std::fs::create_dir_all(&dir).unwrap();
    let grid_path = dir.join("grid.toml");
    std::fs::write(
        &grid_path,
        r#"
[[variant]]
name = "random-init"
random-init = true
[[variant]]
name = "byol"
[[variant]]
name = "simclr"
set = ["model.use-predictor=false", 'target.mode="none"', 'objective.kind="nt-xent"', "objective.temperature=0.5"]
"#,
    )
    .unwrap();
    let grid = Grid::load(&grid_path).unwrap();
    let base = Settings {
        set: tiny_overrides(&["train.knn-every-epochs=0"]),
        epochs: Some(1),
        ..Default::default()
    };
    let runs = dir.join("runs");
    let two = AblationOptions {
        seeds: vec![3, 4],
        linear: false,
    };
    let a = ablate("small-cpu", &base, &grid, &runs, &two, &mut Quiet).unwrap();
    assert_eq!(a.runs.len(), 6);
    let names: Vec<(&str, u64)> = a.runs.iter().map(|r| (r.name.as_str(), r.seed)).collect();
    assert_eq!(
        names,
        [
            ("random-init", 3),
            ("random-init", 4),
            ("byol", 3),
            ("byol", 4),
            ("simclr", 3),
            ("simclr", 4)
        ]
    );
    assert_eq!(a.runs[0].steps, 0);
    assert!(a.runs[0].losses.is_empty() && a.runs[0].collapsed.is_none());
    assert!(
        a.runs[2..]
            .iter()
            .all(|r| r.steps == 5 && r.losses.len() == 5 && r.final_loss.unwrap() > 0.0)
    );
    assert!(
        a.runs[4].config.starts_with("seed = 3\n")
            && a.runs[4].config.contains("kind = \"nt-xent\""),
        "{}",
        a.runs[4].config
    );
    assert_eq!(a.runs[4].overrides[2], "objective.kind=\"nt-xent\"");
    assert_eq!(
        a.settings.last().map(String::as_str),
        Some("train.epochs = 1")
    );
    // The seeds give different encoders, and the summary is their mean and spread.
    let (b3, b4) = (a.runs[2].knn_top1, a.runs[3].knn_top1);
    assert_ne!(
        a.runs[2].losses, a.runs[3].losses,
        "seeds 3 and 4 trained the same run"
    );
    let s = &a.summary[1];
    assert_eq!(
        (s.name.as_str(), s.seeds.as_slice()),
        ("byol", &[3u64, 4][..])
    );
    assert!((s.knn_top1.mean - (b3 + b4) / 2.0).abs() < 1e-12);
    assert!((s.knn_top1.std - (b3 - b4).abs() / 2f64.sqrt()).abs() < 1e-12);
    assert_eq!((s.knn_top1.min, s.knn_top1.max), (b3.min(b4), b3.max(b4)));
    assert_eq!(s.collapsed.map(|c| c <= 2), Some(true));
    for f in ["ablation.md", "ablation.json"] {
        assert!(runs.join(f).exists(), "{f}");
    }
    assert!(runs.join("simclr/seed-4/ablation-row.json").exists());
    let md = std::fs::read_to_string(runs.join("ablation.md")).unwrap();
    assert!(md.contains("| simclr | 3, 4 |"), "{md}");
    // A rerun does no training: every run is read back.
    struct Count(usize);
    impl Observer for Count {
        fn on_message(&mut self, m: &str) {
            if m.contains("already done") {
                self.0 += 1;
            }
        }
    }
    // A row written before a field existed (here: without `data.max-image-pixels`, which then
    // reads as its default) is the same run.
    let row_path = runs.join("byol/seed-3/ablation-row.json");
    let mut row: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&row_path).unwrap()).unwrap();
    let older = row["config"]
        .as_str()
        .unwrap()
        .replace("max-image-pixels = 100000000\n", "");
    assert_ne!(older, row["config"].as_str().unwrap());
    row["config"] = older.into();
    std::fs::write(&row_path, row.to_string()).unwrap();
    let mut c = Count(0);
    let again = ablate("small-cpu", &base, &grid, &runs, &two, &mut c).unwrap();
    assert_eq!(c.0, 6);
    assert_eq!(again.runs[3].knn_top1, b4);
    // The runs kept as their records alone (no checkpoint, no row: what `docs/runs/` keeps of a
    // run, copied back onto a machine that lost its run folder) read back as the same rows, with
    // nothing trained; the linear evaluation, which needs the encoder, is refused.
    let kept = dir.join("kept");
    for r in a.runs.iter().filter(|r| !r.random_init) {
        let seed = format!("seed-{}", r.seed);
        let (from, to) = (
            runs.join(&r.name).join(&seed),
            kept.join(&r.name).join(&seed),
        );
        std::fs::create_dir_all(&to).unwrap();
        for f in [
            "config.toml",
            "eval.json",
            "evals.jsonl",
            "metrics.jsonl",
            "run.json",
        ] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
    let trained = Grid {
        variant: grid.variant[1..].to_vec(),
    };
    let mut c = Count(0);
    let back = ablate("small-cpu", &base, &trained, &kept, &two, &mut c).unwrap();
    assert_eq!(c.0, 4);
    for (b, r) in back.runs.iter().zip(&a.runs[2..]) {
        assert_eq!(
            (
                b.steps,
                b.knn_top1,
                b.knn_top5,
                b.final_loss,
                b.projection_std
            ),
            (
                r.steps,
                r.knn_top1,
                r.knn_top5,
                r.final_loss,
                r.projection_std
            )
        );
        assert_eq!(
            (&b.losses, &b.evals, &b.config),
            (&r.losses, &r.evals, &r.config)
        );
    }
    let linear = AblationOptions {
        linear: true,
        ..two.clone()
    };
    let err = ablate("small-cpu", &base, &trained, &kept, &linear, &mut Quiet)
        .expect_err("no encoder to evaluate")
        .to_string();
    assert!(err.contains("without its checkpoints"), "{err}");
    // Another grid reuses the runs of the same config by linking their directory: read back
    // under its own variant's name, not redone.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::os::unix::fs::symlink(runs.join("byol"), other.join("byol-again")).unwrap();
    let linked = Grid {
        variant: vec![byol::ablate::Variant {
            name: "byol-again".into(),
            set: vec![],
            random_init: false,
            relative_to: None,
            paper_delta: None,
        }],
    };
    let mut c = Count(0);
    let reused = ablate("small-cpu", &base, &linked, &other, &two, &mut c).unwrap();
    assert_eq!(c.0, 2);
    assert_eq!(
        (reused.runs[1].name.as_str(), reused.runs[1].knn_top1),
        ("byol-again", b4)
    );
    assert_eq!(
        (
            reused.summary[0].name.as_str(),
            reused.summary[0].seeds.as_slice()
        ),
        ("byol-again", &[3u64, 4][..])
    );
    // After a change of the base config the recorded runs are stale: refused, not reported.
    let changed = Settings {
        set: tiny_overrides(&["train.knn-every-epochs=0", "optim.base-lr=0.5"]),
        epochs: Some(1),
        ..Default::default()
    };
    let err = ablate("small-cpu", &changed, &grid, &runs, &two, &mut Quiet)
        .expect_err("stale rows refused")
        .to_string();
    assert!(
        err.contains("random-init")
            && err.contains("another config")
            && err.contains("optim.base-lr: 1.0 → 0.5"),
        "{err}"
    );
    // So after a change of one variant's overrides.
    let mut edited = grid.clone();
    edited.variant.remove(0);
    edited.variant[1]
        .set
        .push("objective.temperature=0.2".into());
    let err = ablate("small-cpu", &base, &edited, &runs, &two, &mut Quiet)
        .expect_err("stale row refused")
        .to_string();
    assert!(
        err.contains("simclr") && err.contains("objective.temperature: 0.5 → 0.2"),
        "{err}"
    );
}

/// A diverging run (an absurd learning rate): `stop` ends it with an error naming the step and a
/// diagnostic file; `skip` skips the non-finite steps, records each, and gives up after 10 in a row.
#[test]
fn non_finite_loss_stops_or_skips_as_configured() {
    let opts = RunOptions {
        resume: false,
        compare_random: false,
        max_steps: None,
        ..Default::default()
    };
    let diverging = ["optim.kind=\"sgd\"", "optim.base-lr=1e30", "train.epochs=6"];
    let dir = tmp("nan-stop");
    let e =
        pretrain(&tiny(&diverging), &dir, &opts, &mut Quiet).expect_err("a diverging run fails");
    assert!(e.to_string().contains("non-finite loss at step"), "{e}");
    let diag: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("non-finite.json")).unwrap())
            .unwrap();
    assert!(diag["step"].as_u64().unwrap() >= 1);
    let mut with_skip = diverging.to_vec();
    with_skip.push("train.on-non-finite=\"skip\"");
    let dir = tmp("nan-skip");
    let e =
        pretrain(&tiny(&with_skip), &dir, &opts, &mut Quiet).expect_err("gives up after 10 skips");
    assert!(e.to_string().contains("10 consecutive steps"), "{e}");
    let skipped = std::fs::read_to_string(dir.join("skipped-steps.jsonl")).unwrap();
    assert_eq!(skipped.lines().count(), 10);
    let first: serde_json::Value = serde_json::from_str(skipped.lines().next().unwrap()).unwrap();
    assert!(first["step"].as_u64().unwrap() >= 1);
}

/// Mixed precision on `flex`: with bf16 or f16 views the first loss is close to the f32 one,
/// the weights stay f32 and the step updates them.
#[test]
fn mixed_precision_steps_track_the_f32_step() {
    mixed_precision_tracks_f32(&tiny(&[]), "encoder.conv1.weight");
}

/// The same for a ViT: its patch projection, Linears and attention compute in the low type.
#[test]
fn mixed_precision_vit_steps_track_the_f32_step() {
    let cfg = tiny_vit(&[]);
    mixed_precision_tracks_f32(&cfg, "encoder.blocks.0.attn.qkv.weight");
}

/// One step of `cfg` in f32, bf16 and f16 from the same state: the low types' losses within 2 %
/// of f32's, and not equal to an f32 step's on the same rounded views (the encoder computed in
/// the low type), the master weights f32 and `weight` moved.
fn mixed_precision_tracks_f32(cfg: &ExperimentConfig, weight: &str) {
    use byol::model::precision::{Precision, to_f32};
    let device = Device::flex();
    let (v1, v2) = views(8, 16, &device);
    let f32_loss = {
        let state = TrainState::init(cfg, &device);
        let (_, m) = train_step(state, v1.clone(), v2.clone(), 0.1, 0.99, &cfg.objective).unwrap();
        m.loss.into_scalar::<f32>()
    };
    for p in [Precision::Bf16, Precision::F16] {
        let state = TrainState::init(cfg, &device);
        let before = collect(&state.online);
        let (state, m) = train_step(
            state,
            p.cast(v1.clone()),
            p.cast(v2.clone()),
            0.1,
            0.99,
            &cfg.objective,
        )
        .unwrap();
        let l = m.loss.into_scalar::<f32>();
        assert!(
            (l - f32_loss).abs() < 0.02 * f32_loss.abs(),
            "{p:?}: {l} vs f32 {f32_loss}"
        );
        let rounded = |v: &Tensor<4>| to_f32(p.cast(v.clone()));
        let (_, m) = train_step(
            TrainState::init(cfg, &device),
            rounded(&v1),
            rounded(&v2),
            0.1,
            0.99,
            &cfg.objective,
        )
        .unwrap();
        let f32_on_rounded = m.loss.into_scalar::<f32>();
        assert_ne!(l, f32_on_rounded, "{p:?}: the encoder computed in f32");
        let after = collect(&state.online);
        assert_eq!(
            after[weight].flat.dtype(),
            burn::tensor::DType::F32,
            "master weights stay f32"
        );
        assert_ne!(
            values(&before[weight].flat),
            values(&after[weight].flat),
            "{p:?}: {weight} moved"
        );
    }
}

fn probe_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("probe.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// The online linear probe sends no gradient into the network (the run's losses and weights are
/// bit-identical with and without it), it is part of the checkpoint (a resumed run reports the
/// same accuracies). That it learns: `byol_beats_random_init_on_cifar10`.
#[test]
fn online_probe_sends_no_gradient_and_resumes_exactly() {
    let cfg = tiny(&["train.log-every=1"]);
    let opts = RunOptions {
        resume: false,
        compare_random: false,
        max_steps: None,
        ..Default::default()
    };
    let (on, off, half) = (tmp("probe-on"), tmp("probe-off"), tmp("probe-half"));
    let r = pretrain(&cfg, &on, &opts, &mut Quiet).unwrap();
    let top1 = r
        .online_linear_top1
        .expect("the probe is on by default with labelled data");
    assert!((0.0..=1.0).contains(&top1));
    let r_off = pretrain(
        &tiny(&["train.log-every=1", "eval.online-probe.enabled=false"]),
        &off,
        &opts,
        &mut Quiet,
    )
    .unwrap();
    assert!(r_off.online_linear_top1.is_none() && !off.join("probe.jsonl").exists());
    assert_eq!(
        losses(&on),
        losses(&off),
        "the probe changes nothing in training"
    );
    same_online_weights(&on, &off);
    // Two epochs of 5 steps: one line per epoch.
    let lines = probe_lines(&on);
    assert_eq!(lines.len(), 2, "{lines:?}");
    // Interrupted at step 3 and resumed: the same reports.
    pretrain(
        &cfg,
        &half,
        &RunOptions {
            max_steps: Some(3),
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    let r = pretrain(
        &cfg,
        &half,
        &RunOptions {
            resume: true,
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    let resumed = probe_lines(&half);
    assert_eq!(resumed.len(), 2, "{resumed:?}");
    // Both epochs' reports are the same, the first epoch's training accuracy included: the
    // checkpoint holds the epoch's count so far.
    assert_eq!(resumed, lines);
    assert_eq!(r.online_linear_top1, Some(top1));
}
