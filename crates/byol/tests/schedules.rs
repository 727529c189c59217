//! The loop feeds the schedules: the learning rate and τ that a run logs at each step are those
//! of `optim::schedule::lr_at` and `ema::tau_at` at that step (the step parity test computes them
//! itself, so only this test sees the loop's wiring). Step k (1-based in the log) is trained with
//! the schedules at k − 1: an off-by-one changes the warm-up's rate at every step.

use byol::train::{RunOptions, pretrain, run_dir};

mod common;
use common::{Quiet, tiny, tmp};

#[test]
fn logged_lr_and_tau_are_the_schedules_at_each_step() {
    // 3 epochs of 5 steps, 1 of them warm-up: the warm-up, its peak and the cosine decay.
    let cfg = tiny(&[
        "train.log-every=1",
        "train.epochs=3",
        "optim.warmup-epochs=1",
        "eval.online-probe.enabled=false",
    ]);
    let dir = tmp("schedules");
    let report = pretrain(&cfg, &dir, &RunOptions::default(), &mut Quiet).unwrap();
    let (spe, total) = (5, 15);
    assert_eq!(report.steps, total);
    let peak = byol::optim::schedule::peak_lr(cfg.optim.base_lr, cfg.train.batch_size);
    let logged = run_dir::read_metrics(&dir).unwrap();
    assert_eq!(
        logged.iter().map(|m| m.step).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    for m in &logged {
        let k = m.step - 1;
        let lr = byol::optim::schedule::lr_at(peak, k, spe, total);
        let tau = byol::ema::tau_at(&cfg.target, k, total);
        // The log holds the values the step used; serde_json writes them exactly but its default
        // parser may read them back 1 ulp off, hence 2 ulps. An off-by-one is 1e-3 away or more.
        let close = |a: f64, b: f64| (a - b).abs() <= 2.0 * f64::EPSILON * b.abs();
        assert!(
            close(m.lr, lr) && close(m.tau, tau),
            "step {}: logged lr {} τ {}, schedules {lr} {tau}",
            m.step,
            m.lr,
            m.tau
        );
    }
    // The schedules do move over these steps, so a shifted step cannot match them.
    assert!(
        logged[0].lr < logged[1].lr && logged[14].tau > logged[1].tau,
        "{logged:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
