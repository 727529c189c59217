//! The terminal side of a run: the progress bar (an `Observer` of pre-training, a `Progress` of
//! the fine-tuning loops) and what Ctrl-C does.

use anyhow::{Context, Result};
use byol::train::{EvalReport, Observer, ProbeReport, StepLog};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) struct Bar {
    pub(crate) pb: ProgressBar,
}

impl Bar {
    /// A bar drawn from the run's first step on ([`Observer::on_start`]): a command that never
    /// trains (an evaluation, a finished run) prints its lines without an empty `0/0 steps` bar.
    pub(crate) fn new() -> Self {
        let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps (ETA {eta}) {msg}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        Bar { pb }
    }

    /// A line above the bar, or on stderr when there is no terminal to draw the bar on.
    pub(crate) fn println(&self, m: &str) {
        if self.pb.is_hidden() {
            eprintln!("{m}");
        } else {
            self.pb.println(m);
        }
    }
}

impl Observer for Bar {
    fn on_start(&mut self, start: u64, total: u64) {
        self.pb.set_draw_target(ProgressDrawTarget::stderr());
        self.pb.set_length(total);
        self.pb.set_position(start);
        self.pb.reset_eta();
    }
    fn on_step(&mut self, log: &StepLog) {
        self.pb.set_position(log.step);
        self.pb.set_message(format!(
            "ep {} loss {:.4} lr {:.3} τ {:.4} std {:.3} {:.0} img/s",
            log.epoch, log.loss, log.lr, log.tau, log.projection_std, log.images_per_sec
        ));
    }
    fn on_eval(&mut self, r: &EvalReport) {
        self.println(&format!(
            "epoch {} step {}: kNN top-1 {:.2}% top-5 {:.2}%",
            r.epoch,
            r.step,
            100.0 * r.knn.top1,
            100.0 * r.knn.top5
        ));
    }
    fn on_probe(&mut self, r: &ProbeReport) {
        self.println(&format!(
            "epoch {} step {}: online linear probe top-1 {:.2}% on the test split ({:.2}% on this epoch's training views)",
            r.epoch,
            r.step,
            100.0 * r.test_top1,
            100.0 * r.train_top1
        ));
    }
    fn on_message(&mut self, m: &str) {
        self.println(m);
    }
}

impl byol::supervised::Progress for Bar {
    fn on_start(&mut self, total: u64) {
        self.pb.set_length(total);
        self.pb.reset_eta();
    }
    fn on_step(&mut self, step: u64, loss: f32) {
        self.pb.set_position(step);
        self.pb.set_message(format!("loss {loss:.4}"));
    }
}

/// A flag that the first Ctrl-C (or SIGTERM) sets: the run finishes its step, writes a
/// checkpoint where it keeps them, and stops. A second one ends the process at once (the run then
/// loses at most the steps since its last checkpoint, as after a kill), saying `then`: how to go
/// on.
pub(crate) fn stop_on_signal(then: &str) -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let then = then.to_string();
    ctrlc::set_handler(move || {
        if set.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopped at once; {then}");
            std::process::exit(130);
        }
        eprintln!("\nfinishing the step in progress, then stopping (Ctrl-C again to stop at once)");
    })
    .context("installing the Ctrl-C handler")?;
    Ok(flag)
}
