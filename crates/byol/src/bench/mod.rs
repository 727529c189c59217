//! Benchmarks behind `byol bench`: each measures ours and a baseline in the same process, so
//! that the ratio is meaningful on any machine (`decode` measures ours; `bench/decode.sh` runs
//! the baseline beside it in the same script).

pub mod augment;
pub mod decode;
pub mod step;

pub use augment::{AugmentBench, bench_augment};
pub use decode::{DecodeBench, bench_decode};
pub use step::{StepArch, StepBench, StepSetup, bench_step};

/// Median of `f`'s wall time over `reps` runs after `warmup` untimed runs, in seconds.
pub fn median_seconds(warmup: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
