//! TensorBoard event files of a run: a run interrupted and resumed writes the same curves as an
//! uninterrupted one (our reader checks every record's CRCs), and TensorBoard's own reader
//! (`tensorboard.backend.event_processing.event_accumulator`) reads the same values. The second
//! part runs where a Python with `tensorboard` is found (`$BYOL_BENCH_VENV/bin/python`, default
//! `~/.cache/byol/bench-venv`, where `bench/cpu.sh` and `pip install tensorboard` put it, and
//! where `.ci/run` makes one); elsewhere it says so and checks only the first, and under CI
//! (`CI` set) it fails.

use byol::events::{event_files, read_scalars};
use byol::train::{RunOptions, pretrain};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{Quiet, tiny, tmp};

type Curves = BTreeMap<String, Vec<(u64, f32)>>;

/// Every scalar of a run directory's event files, in file order, by tag.
fn curves(dir: &Path) -> Curves {
    let mut out = Curves::new();
    for f in event_files(dir).unwrap() {
        for e in read_scalars(&f).unwrap().0 {
            out.entry(e.tag).or_default().push((e.step, e.value));
        }
    }
    out
}

fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("BYOL_BENCH_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/byol/bench-venv"))
        })?;
    let py = venv.join("bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

#[test]
fn resumed_runs_write_the_same_curves_and_tensorboard_reads_them() {
    let cfg = tiny(&["train.log-every=1", "train.knn-every-epochs=1"]);
    let opts = RunOptions {
        resume: false,
        compare_random: false,
        max_steps: None,
        ..Default::default()
    };
    let (full, half) = (tmp("events-full"), tmp("events-half"));
    pretrain(&cfg, &full, &opts, &mut Quiet).unwrap();
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
            ..opts.clone()
        },
        &mut Quiet,
    )
    .unwrap();
    let want = curves(&full);
    let tags: Vec<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(
        tags,
        [
            "eval/knn_top1",
            "eval/knn_top5",
            "eval/online_linear_top1",
            "train/images_per_sec",
            "train/loss",
            "train/lr",
            "train/online_linear_top1",
            "train/projection_std",
            "train/tau"
        ]
    );
    assert_eq!(
        want["train/loss"].iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        want["eval/knn_top1"]
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        [5, 10]
    );
    // The losses of metrics.jsonl, as f32.
    let metrics: Vec<f32> = std::fs::read_to_string(full.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap() as f32
        })
        .collect();
    assert_eq!(
        want["train/loss"].iter().map(|e| e.1).collect::<Vec<_>>(),
        metrics
    );
    let got = curves(&half);
    assert_eq!(event_files(&half).unwrap().len(), 2, "one file per process");
    // Every curve but the wall-clock rate and the probe's accuracy on the training views of the
    // interrupted epoch (it counts the steps its process ran) is the same.
    for tag in [
        "train/loss",
        "train/lr",
        "train/tau",
        "train/projection_std",
        "eval/knn_top1",
        "eval/knn_top5",
        "eval/online_linear_top1",
    ] {
        assert_eq!(got[tag], want[tag], "{tag}");
    }
    assert_eq!(
        got["train/online_linear_top1"][1],
        want["train/online_linear_top1"][1]
    );

    let Some(py) = python() else {
        // CI (.ci/run) makes that environment, so there a missing reader is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI has no Python with `tensorboard` in $BYOL_BENCH_VENV: TensorBoard's reader was not run"
        );
        eprintln!(
            "TensorBoard's reader not checked: no Python with `tensorboard` (pip install tensorboard into $BYOL_BENCH_VENV)"
        );
        return;
    };
    let script = "import json, sys\n\
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
        ea = EventAccumulator(sys.argv[1]); ea.Reload()\n\
        print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}))";
    let out = std::process::Command::new(&py)
        .args(["-c", script, half.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tb: BTreeMap<String, Vec<(u64, f64)>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        tb.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (tag, series) in &got {
        // TensorBoard holds the f32 as a Python float; through JSON it comes back within an f64
        // ulp (serde_json's default parsing), exactly the f32 again.
        let theirs: Vec<(u64, f32)> = tb[tag].iter().map(|&(s, v)| (s, v as f32)).collect();
        assert_eq!(&theirs, series, "{tag} as TensorBoard reads it");
    }
    eprintln!(
        "TensorBoard's reader ({}) read {} tags, the same values",
        py.display(),
        tb.len()
    );
}
