//! Learning-rate schedule (paper Appendix C, official `byol/utils/schedules.py`): the peak rate
//! is base × batch/256; it rises linearly from 0 over the warm-up steps, then follows a cosine
//! decay to 0 at the last step, without restarts. A pure function of the step, so a resumed run
//! needs no scheduler state. (burn's built-in schedulers reject peaks above 1; BYOL's is 3.2 at
//! batch 4096.)

/// Peak learning rate after linear scaling.
pub fn peak_lr(base_lr: f64, batch_size: usize) -> f64 {
    base_lr * batch_size as f64 / 256.0
}

/// Learning rate at `step` (0-based) of `total` steps with `warmup` warm-up steps.
pub fn lr_at(peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup);
    if decay_steps == 0 {
        return peak;
    }
    let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_scaling() {
        assert!((peak_lr(0.2, 4096) - 3.2).abs() < 1e-12);
        assert!((peak_lr(0.3, 256) - 0.3).abs() < 1e-12);
    }

    #[test]
    fn warmup_then_cosine_table() {
        // peak 3.2, 10 warm-up steps, 110 steps in all.
        let table = [
            (0, 0.0),
            (1, 0.32),
            (5, 1.6),
            (10, 3.2),
            (60, 1.6),
            (35, 3.2 * 0.5 * (1.0 + (std::f64::consts::FRAC_PI_4).cos())),
            (110, 0.0),
            (200, 0.0),
        ];
        for (step, expect) in table {
            let got = lr_at(3.2, step, 10, 110);
            assert!(
                (got - expect).abs() < 1e-12,
                "step {step}: {got} vs {expect}"
            );
        }
    }

    #[test]
    fn no_warmup() {
        assert!((lr_at(1.0, 0, 0, 4) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 2, 0, 4) - 0.5).abs() < 1e-12);
    }
}
