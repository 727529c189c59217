//! The `byol` binary on the GPU code path: `--backend wgpu` on whatever device wgpu finds (in
//! CI, Mesa's lavapipe, a Vulkan device on the CPU). Built only with `--features wgpu`.

#![cfg(feature = "wgpu")]

mod common;

use common::{TINY, byol, tiny_model};

/// Pre-training with the views made on the device (the `auto` placement on a GPU backend), a
/// checkpoint, resume to the end of the schedule, and the kNN evaluation, all on wgpu; the
/// resumed run ends on the same loss as an uninterrupted one on the same device.
#[test]
fn pretrain_resume_and_knn_on_wgpu() {
    let dir = std::env::temp_dir().join(format!("byol-wgpu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tiny: Vec<&str> = [
        "--backend",
        "wgpu",
        "--set",
        "train.log-every=1",
        "--no-baseline",
    ]
    .into_iter()
    .chain(TINY.iter().copied())
    .collect();
    let halves = dir.join("halves");
    let d = halves.to_str().unwrap();
    let mut args = vec!["pretrain", "--run-dir", d, "--max-steps", "5"];
    args.extend(&tiny);
    let (ok, out, err) = byol(&args);
    assert!(ok, "{err}");
    assert!(out.contains("pre-trained 5 steps"), "{out}");
    let (ok, out, err) = byol(&["pretrain", "--resume", d, "--no-baseline"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("pre-trained 10 steps") && out.contains("kNN (k=5) on 40 test images"),
        "{out}"
    );
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(halves.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["backend"], "wgpu");

    let whole = dir.join("whole");
    let mut args = vec!["pretrain", "--run-dir", whole.to_str().unwrap()];
    args.extend(&tiny);
    let (ok, _, err) = byol(&args);
    assert!(ok, "{err}");
    let last_loss = |run: &std::path::Path| -> f64 {
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["step"], 10);
        last["loss"].as_f64().unwrap()
    };
    // Not bit for bit, unlike on flex: each process autotunes its kernels by timing them, and two
    // processes may pick kernels that sum in different orders (measured on lavapipe: 1 ulp,
    // 1e-7 relative, at step 10). A resume that lost the optimizer state, the schedule or the
    // views' random stream changes the step-10 loss by more than 1e-3.
    let (a, b) = (last_loss(&halves), last_loss(&whole));
    assert!(
        (a - b).abs() <= 1e-5 * b.abs(),
        "5 + resume + 5 steps end on {a}, 10 steps on {b}"
    );

    let (ok, out, err) = byol(&["eval", "knn", "--checkpoint", d, "--k", "3"]);
    assert!(ok, "{err}");
    assert!(out.contains("top-1"), "{out}");
}

/// `bench step` on the GPU path says it was built with burn's autotune and fusion, times the first
/// step (compilation and tuning) apart, and leaves CubeCL's kernel and autotune cache where
/// `BYOL_GPU_CACHE` points, so that the next process finds it. The reference's step at `TINY`'s
/// model and batch (`--set`, from `tiny_model`): its kernels are the other tests', so lavapipe
/// compiles few of its own (the reference's width-64 ResNet-18 alone took 440 s on a 2-core CPU).
#[test]
fn bench_step_and_augment_on_wgpu() {
    let cache = std::env::temp_dir().join(format!("byol-gpu-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let mut args = vec![
        "bench",
        "step",
        "--backend",
        "wgpu",
        "--batch",
        "16",
        "--steps",
        "1",
        "--warmup",
        "0",
    ];
    // The heads' outputs at the tests' preset's (the reference's are 256 wide).
    let outputs = ["model.projector.output=64", "model.predictor.output=64"];
    for set in tiny_model().into_iter().chain(outputs) {
        args.extend(["--set", set]);
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_byol"))
        .args(&args)
        .env("BYOL_GPU_CACHE", &cache)
        .output()
        .expect("run byol");
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(
        (&line["device"], &line["cfg"], &line["overrides"][0]),
        (
            &"wgpu".into(),
            &"r18c32".into(),
            &"model.encoder.base-width=4".into()
        ),
        "{stdout}"
    );
    assert!(
        line["loss"].as_f64().is_some_and(f64::is_finite),
        "{stdout}"
    );
    assert_eq!(
        (&line["autotune"], &line["fusion"]),
        (&true.into(), &true.into()),
        "{stdout}"
    );
    assert!(
        line["first_step_s"].as_f64().is_some_and(|s| s > 0.0),
        "{stdout}"
    );
    // CubeCL's database (SQLite, with its write-ahead log) names each cache by a namespace kept
    // as plain text: the convolutions' autotune results and the fused kernels' tuners are there
    // only when burn's autotune and fusion ran in this process.
    let files: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "db")),
        "no CubeCL database in {} after a GPU run: {files:?}",
        cache.display()
    );
    let bytes: Vec<u8> = files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        has("kernel-conv-forward-tune"),
        "no tuned convolution in the cache: autotune did not run"
    );
    assert!(
        has("burn_cubecl_fusion-optim"),
        "no fused kernel in the cache: fusion did not run"
    );
    let _ = std::fs::remove_dir_all(&cache);
    // WGSL has no bf16: a clear error naming the field, not a panic in a kernel.
    let (ok, _, err) = byol(&[
        "bench",
        "step",
        "--backend",
        "wgpu",
        "--arch",
        "r18c32",
        "--batch",
        "2",
        "--steps",
        "1",
        "--precision",
        "bf16",
    ]);
    assert!(
        !ok && err.contains("train.precision") && err.contains("bfloat16"),
        "{err}"
    );
    let (ok, out, err) = byol(&[
        "bench",
        "augment",
        "--backend",
        "wgpu",
        "--sizes",
        "16",
        "--batch",
        "8",
        "--reps",
        "1",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).expect("JSON");
    assert!(v["device_views_per_sec"].as_f64().unwrap() > 0.0, "{out}");
    // A batch the device cannot hold (lavapipe refuses the 154 MB buffer of 50,000 views of 16 px
    // in f32) is an error naming the size (exit status 1), not a panic (101); a GPU runs it. At
    // 16 px the kernels are those of the run above: this costs seconds.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_byol"))
        .args([
            "bench",
            "augment",
            "--backend",
            "wgpu",
            "--sizes",
            "16",
            "--batch",
            "50000",
            "--reps",
            "1",
        ])
        .output()
        .expect("run byol");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            || (out.status.code() == Some(1)
                && err.contains("the view pipeline at 16 px failed on the device")),
        "{:?}: {err}",
        out.status
    );
}
