//! The `byol` binary as a user runs it.

mod common;

use common::{TINY, byol, byol_in};

#[test]
fn dump_config_prints_the_resolved_config_with_overrides() {
    let (ok, out, err) = byol(&[
        "dump-config",
        "--config",
        "cifar10-cpu",
        "--epochs",
        "7",
        "--set",
        "model.encoder.base-width=16",
    ]);
    assert!(ok, "{err}");
    let v: toml::Table = out.parse().expect("valid TOML");
    assert_eq!(v["train"]["epochs"].as_integer(), Some(7));
    assert_eq!(v["model"]["encoder"]["base-width"].as_integer(), Some(16));
    assert_eq!(v["data"]["source"].as_str(), Some("folder"));
}

#[test]
fn bad_config_is_rejected_naming_the_field() {
    let (ok, _, err) = byol(&["dump-config", "--set", "optim.learning-rate=0.1"]);
    assert!(!ok);
    assert!(err.contains("learning-rate"), "{err}");
    let (ok, _, err) = byol(&[
        "dump-config",
        "--set",
        "augment.view1.crop-scale=[0.9, 0.1]",
    ]);
    assert!(!ok);
    assert!(err.contains("augment.view1.crop-scale"), "{err}");
    let (ok, _, err) = byol(&["dump-config", "--config", "no-such-preset"]);
    assert!(!ok);
    assert!(
        err.contains("no-such-preset") && err.contains("presets"),
        "{err}"
    );
    // Integers above TOML's range were a panic; counts of 0 in the benchmarks a panic or zeros.
    for (args, field) in [
        (
            &["dump-config", "--seed", "9223372036854775808"][..],
            "`seed`",
        ),
        (
            &["dump-config", "--epochs", "9223372036854775808"][..],
            "`train.epochs`",
        ),
        (&["bench", "augment", "--sizes", "0"][..], "--sizes"),
        (&["bench", "augment", "--batch", "0"][..], "--batch"),
        (
            &["bench", "decode", "--data", "x", "--size", "0"][..],
            "--size",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_byol"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some_and(|c| c == 1 || c == 2)
                && err.contains(field)
                && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// A run that fails before its first step (here: its data folder does not exist) leaves no run
/// directory behind; one that existed before is left as it was.
#[test]
fn a_run_that_cannot_start_leaves_no_run_directory() {
    let dir = std::env::temp_dir().join(format!("byol-cli-nostart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let (ok, _, err) = byol(&["pretrain", "--run-dir", d, "--data", "/nonexistent/images"]);
    assert!(!ok && err.contains("/nonexistent/images"), "{err}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    std::fs::create_dir_all(&dir).unwrap();
    let (ok, _, err) = byol(&["pretrain", "--run-dir", d, "--data", "/nonexistent/images"]);
    assert!(!ok, "{err}");
    assert!(dir.exists(), "a directory the user made was removed");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Data of one class (every image the same label) gets no accuracy: pre-training runs and says
/// why it does not evaluate, and the evaluation commands refuse, instead of reporting 100 %.
#[test]
fn one_class_data_reports_no_accuracy() {
    let dir = std::env::temp_dir().join(format!("byol-cli-oneclass-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data").join("only");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..40u8 {
        let img = image::RgbImage::from_fn(20, 20, |x, y| {
            image::Rgb([i * 6, (x * 12) as u8, (y * 12) as u8])
        });
        img.save(data.join(format!("{i}.png"))).unwrap();
    }
    let run = dir.join("run");
    let (d, r) = (dir.join("data"), run.to_str().unwrap().to_string());
    let mut args = vec!["pretrain", "--run-dir", &r, "--data", d.to_str().unwrap()];
    args.extend(TINY);
    let (ok, out, err) = byol(&args);
    assert!(ok, "{err}");
    assert!(
        out.contains("pre-trained") && !out.contains("top-1"),
        "{out}"
    );
    assert!(
        err.contains("no kNN evaluation: the training set has 1 class(es)"),
        "{err}"
    );
    for eval in ["knn", "linear"] {
        let (ok, out, err) = byol(&["eval", eval, "--checkpoint", &r]);
        assert!(
            !ok && !out.contains("top-1")
                && err.contains("needs labels, and the training set has 1 class(es)"),
            "{eval}: {out}\n{err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Settings that cannot be right are refused with the field and what to do instead: an
/// evaluation's `--set model.*` (the checkpoint decides the architecture; it used to be ignored
/// silently), `byol shard --resize-shorter 0` (it wrote 1×1 images), `--shard-mb 0` and
/// `pretrain --max-steps 0`.
#[test]
fn settings_that_cannot_be_right_are_refused() {
    let (ok, _, err) = byol(&[
        "eval",
        "knn",
        "--checkpoint",
        "/nonexistent",
        "--set",
        "model.encoder.base-width=8",
    ]);
    assert!(
        !ok && err.contains("model.encoder.base-width")
            && err.contains("comes from the checkpoint"),
        "{err}"
    );
    let out = std::env::temp_dir().join(format!("byol-cli-resize0-{}", std::process::id()));
    let (ok, _, err) = byol(&[
        "shard",
        "--input",
        "/nonexistent",
        "--out",
        out.to_str().unwrap(),
        "--resize-shorter",
        "0",
    ]);
    assert!(
        !ok && err.contains("resize-shorter") && err.contains("at least 8 px"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "a refused shard command made its output folder"
    );
    // `--max-steps 0` trained nothing, printed "final loss NaN" and suggested a failing resume.
    let (ok, _, err) = byol(&[
        "pretrain",
        "--max-steps",
        "0",
        "--run-dir",
        out.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("--max-steps") && err.contains("1.."),
        "{err}"
    );
    assert!(!out.exists(), "a refused pretrain made its run directory");
    // An unknown choice of CPU kernels is an error naming the variable, before anything runs.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_byol"))
        .env("BYOL_CPU_KERNELS", "Burn")
        .args(["dump-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("BYOL_CPU_KERNELS") && err.contains("\"Burn\""),
        "{err}"
    );
    // `--shard-mb 0` acted as 1.
    let (ok, _, err) = byol(&[
        "shard",
        "--input",
        "/nonexistent",
        "--out",
        out.to_str().unwrap(),
        "--shard-mb",
        "0",
    ]);
    assert!(
        !ok && err.contains("--shard-mb") && err.contains("1..=1048576"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "a refused shard command made its output folder"
    );
    // A missing path is said once, as missing.
    let (ok, _, err) = byol(&["eval", "knn", "--checkpoint", "/nonexistent"]);
    assert!(
        !ok && err.matches("No such file or directory").count() == 1,
        "{err}"
    );
    let (ok, _, err) = byol(&[
        "pretrain",
        "--data",
        "shards:/nonexistent",
        "--run-dir",
        out.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("the shards folder does not exist"),
        "{err}"
    );
}

/// `--resume` on data that changed since the checkpoint (images added, a class added) is refused
/// with what changed, instead of continuing the run on other data and another schedule. A run
/// started with a relative `--data` records it resolved: it resumes, and its checkpoint
/// evaluates, from another folder, and the evaluation is written into the run directory.
#[test]
fn resume_refuses_changed_data() {
    let dir = std::env::temp_dir().join(format!("byol-cli-datachange-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let write = |class: &str, n: u8| {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..n {
            let img = image::RgbImage::from_fn(20, 20, |x, y| {
                image::Rgb([i * 6, (x * 12) as u8, class.len() as u8 * 40 + y as u8])
            });
            img.save(data.join(class).join(format!("{i}.png"))).unwrap();
        }
    };
    write("a", 24);
    write("bb", 24);
    let run = dir.join("run");
    let r = run.to_str().unwrap().to_string();
    let mut args = vec![
        "pretrain",
        "--run-dir",
        &r,
        "--data",
        "data",
        "--max-steps",
        "2",
    ];
    args.extend(TINY);
    let (ok, _, err) = byol_in(&dir, &args);
    assert!(ok, "{err}");
    let config: toml::Table = std::fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        config["data"]["path"].as_str(),
        Some(data.to_str().unwrap()),
        "data.path is recorded resolved"
    );
    write("ccc", 24);
    let (ok, _, err) = byol(&["pretrain", "--resume", &r]);
    assert!(!ok, "resumed on changed data: {err}");
    assert!(
        err.contains("differs from the data of the checkpoint")
            && err.contains("classes added [\"ccc\"]"),
        "{err}"
    );
    std::fs::remove_dir_all(data.join("ccc")).unwrap();
    let (ok, _, err) = byol(&["pretrain", "--resume", &r]);
    assert!(ok, "the run's own data again: {err}");
    let (ok, stdout, err) = byol(&["eval", "knn", "--checkpoint", &r, "--k", "3"]);
    assert!(ok && stdout.contains("recorded in"), "{stdout}{err}");
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(run.join("evaluations.jsonl"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(
        (
            line["protocol"].as_str(),
            &line["step"],
            line["settings"]["knn"]["k"].as_u64()
        ),
        (Some("knn"), &report["steps"], Some(3)),
        "{line}"
    );
    assert!(
        line["result"]["top1"]
            .as_f64()
            .is_some_and(|a| (0.0..=1.0).contains(&a)),
        "{line}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pretrain_then_resume_then_eval_knn() {
    let dir = std::env::temp_dir().join(format!("byol-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let mut args = vec!["pretrain", "--run-dir", d, "--max-steps", "3"];
    args.extend(TINY);
    let (ok, out, err) = byol(&args);
    assert!(ok, "{err}");
    assert!(out.contains("pre-trained 3 steps"), "{out}");
    // run.json records which CPU kernels ran (BYOL_CPU_KERNELS, unset here: ours).
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["cpu_kernels"], "ours", "{run}");
    let (ok, out, err) = byol(&["pretrain", "--resume", d]);
    assert!(ok, "{err}");
    assert!(
        out.contains("pre-trained 10 steps") && out.contains("random-init"),
        "{out}"
    );
    // The run's curves as a chart: a real PNG of the size the chart draws, not a blank page.
    let png = image::open(dir.join("curves.png"))
        .expect("curves.png is a PNG")
        .to_rgb8();
    assert_eq!(png.dimensions(), (1200, 720));
    assert!(
        png.pixels().filter(|p| p.0 != [255, 255, 255]).count() > 10_000,
        "curves.png is nearly blank"
    );
    // Resuming the finished run says so and leaves its report and evaluations as they were.
    let recorded =
        ["eval.json", "evals.jsonl", "metrics.jsonl"].map(|f| std::fs::read(dir.join(f)).unwrap());
    let (ok, out, err) = byol(&["pretrain", "--resume", d, "--no-baseline"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("is finished (step 10)") && out.contains("random-init"),
        "{out}\n{err}"
    );
    assert_eq!(
        ["eval.json", "evals.jsonl", "metrics.jsonl"].map(|f| std::fs::read(dir.join(f)).unwrap()),
        recorded
    );
    let (ok, out, err) = byol(&["eval", "knn", "--checkpoint", d, "--k", "3"]);
    assert!(ok, "{err}");
    assert!(out.contains("top-1"), "{out}");
    let (ok, out, err) = byol(&[
        "eval",
        "linear",
        "--checkpoint",
        d,
        "--epochs",
        "2",
        "--lrs",
        "0.1,0.05",
        "--random-init",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("linear evaluation") && out.contains("random-init") && out.contains("lr 0.1 "),
        "{out}"
    );
    let (ok, out, err) = byol(&[
        "eval",
        "finetune",
        "--checkpoint",
        d,
        "--labels",
        "50%",
        "--epochs",
        "2",
        "--set",
        "eval.finetune.batch-size=8",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("fine-tuning on 40 labelled images") && out.contains("from the encoder"),
        "{out}"
    );
    let (ok, out, err) = byol(&[
        "eval",
        "finetune",
        "--checkpoint",
        d,
        "--labels",
        "50%",
        "--epochs",
        "2",
        "--set",
        "eval.finetune.batch-size=8",
        "--from",
        "projector:1",
        "--lr",
        "0.1,0.01",
        "--set",
        "eval.finetune.validation-fraction=0.25",
    ]);
    assert!(
        ok && out.contains("from the projector's first layer"),
        "{out}{err}"
    );
    // Two rates: each scored on 20 held-out training images, one kept.
    assert_eq!(
        out.matches("on 20 held-out training images").count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("learning rate 0.1)") || out.contains("learning rate 0.01)"),
        "{out}"
    );
    let (ok, _, err) = byol(&[
        "eval",
        "finetune",
        "--checkpoint",
        d,
        "--from",
        "projector:2",
    ]);
    assert!(
        !ok && err.contains("expected `encoder` or `projector:1`"),
        "{err}"
    );
    // Transfer: the same encoder on another ImageFolder with its own classes.
    let other = dir.join("other");
    for (c, colour) in [("red", [200u8, 20, 20]), ("blue", [20, 20, 200])] {
        std::fs::create_dir_all(other.join(c)).unwrap();
        for i in 0..20u8 {
            let img = image::RgbImage::from_fn(12, 10, |x, y| {
                if (x + y) % 3 == 0 {
                    image::Rgb([i, i, i])
                } else {
                    image::Rgb(colour)
                }
            });
            img.save(other.join(c).join(format!("{i}.png"))).unwrap();
        }
    }
    let (ok, out, err) = byol(&[
        "eval",
        "linear",
        "--checkpoint",
        d,
        "--data",
        other.to_str().unwrap(),
        "--epochs",
        "5",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("on 4 test images"), "{out}");
    let emb = dir.join("emb.safetensors");
    let (ok, out, err) = byol(&["embed", "--checkpoint", d, "--out", emb.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("120 × 32"), "{out}");
    let enc = dir.join("enc.safetensors");
    let (ok, out, err) = byol(&["export", "--checkpoint", d, "--out", enc.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("no torchvision constructor fits this encoder")
            && out.contains("base width 4"),
        "{out}"
    );
    assert!(std::fs::metadata(&enc).unwrap().len() > 1000);
}

/// A time budget ends the run early, with a checkpoint and the evaluation of the encoder as it
/// is (time to accuracy); a budget of 0 s stops after the first step.
#[test]
fn time_budget_stops_early_and_still_evaluates() {
    let dir = std::env::temp_dir().join(format!("byol-cli-budget-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let mut args = vec![
        "pretrain",
        "--run-dir",
        d,
        "--time-budget",
        "0",
        "--no-baseline",
    ];
    args.extend(TINY);
    let (ok, out, err) = byol(&args);
    assert!(ok, "{err}");
    assert!(
        out.contains("pre-trained 1 steps") && out.contains("stopped by the time budget"),
        "{out}"
    );
    assert!(
        out.contains("kNN (k=5) on 40 test images: trained encoder"),
        "{out}"
    );
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    assert_eq!(
        (
            eval["steps"].as_u64(),
            eval["stopped_by_time_budget"].as_bool()
        ),
        (Some(1), Some(true))
    );
    assert!(
        dir.join("checkpoint-000000001.safetensors").exists(),
        "no checkpoint at step 1"
    );
}

/// `--devices` trains data parallel on CPU replicas and records the devices in the run's config;
/// a device list the batch cannot be split over is refused naming the field.
#[test]
fn pretrain_on_two_cpu_replicas() {
    let dir = std::env::temp_dir().join(format!("byol-cli-devices-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let mut args = vec![
        "pretrain",
        "--run-dir",
        d,
        "--devices",
        "flex:0,flex:1",
        "--no-baseline",
    ];
    args.extend(TINY);
    let (ok, out, err) = byol(&args);
    assert!(ok, "{err}");
    assert!(
        out.contains("pre-trained 10 steps")
            && out.contains("kNN (k=5) on 40 test images: trained encoder"),
        "{out}"
    );
    let config: String = std::fs::read_to_string(dir.join("config.toml"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert!(
        config.contains(r#"devices=["flex:0","flex:1",]"#),
        "{config}"
    );
    let mut args = vec![
        "pretrain",
        "--run-dir",
        d,
        "--devices",
        "flex:0,flex:1,flex:2",
    ];
    args.extend(TINY);
    let (ok, _, err) = byol(&args);
    assert!(
        !ok && err.contains("train.batch-size") && err.contains("3 equal shares"),
        "{err}"
    );
}

/// `byol shard` turns an ImageFolder into shards with manifests; `pretrain --data shards:` and
/// `bench decode` read them.
#[test]
fn shard_an_imagefolder_then_pretrain_on_the_shards() {
    let dir = std::env::temp_dir().join(format!("byol-cli-shard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let folder = dir.join("folder");
    for (c, colour) in [("red", [200u8, 20, 20]), ("blue", [20, 20, 200])] {
        std::fs::create_dir_all(folder.join(c)).unwrap();
        for i in 0..20u8 {
            let img = image::RgbImage::from_fn(24, 18, |x, y| {
                if (x + y) % 3 == 0 {
                    image::Rgb([i, i, i])
                } else {
                    image::Rgb(colour)
                }
            });
            img.save(folder.join(c).join(format!("{i}.png"))).unwrap();
        }
    }
    let out = dir.join("shards");
    let (ok, stdout, err) = byol(&[
        "shard",
        "--input",
        folder.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--resize-shorter",
        "12",
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("train: 36 images of 2 classes in 1 shard(s)")
            && stdout.contains("test: 4 images"),
        "{stdout}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["count"], 36);
    assert_eq!(manifest["classes"], serde_json::json!(["blue", "red"]));
    let data = format!("shards:{}", out.display());
    let run = dir.join("run");
    let mut args = vec![
        "pretrain",
        "--run-dir",
        run.to_str().unwrap(),
        "--data",
        &data,
        "--no-baseline",
    ];
    args.extend(TINY);
    let (ok, stdout, err) = byol(&args);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("pre-trained 4 steps on 36 images") && stdout.contains("on 4 test images"),
        "{stdout}"
    );
    let (ok, stdout, err) = byol(&[
        "bench", "decode", "--data", &data, "--size", "16", "--batch", "8", "--passes", "1",
    ]);
    assert!(ok, "{err}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["images"], 32);
    assert!(line["images_per_sec"].as_f64().unwrap() > 0.0);

    // `--verify` passes the shards as written and fails, naming the shard, once one is cut.
    let (ok, stdout, err) = byol(&["shard", "--verify", out.to_str().unwrap()]);
    assert!(
        ok && stdout.matches("all as recorded").count() == 2,
        "{stdout}{err}"
    );
    let shard = out.join("train/shard-000000.tar");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, stdout, err) = byol(&["shard", "--verify", out.to_str().unwrap()]);
    assert!(
        !ok && stdout.contains("shard-000000.tar: ")
            && stdout.contains("the manifest records 36")
            && err.contains("1 shard(s) differ"),
        "{stdout}{err}"
    );
}

#[test]
fn augment_writes_a_grid_of_images_and_views() {
    let out = std::env::temp_dir().join(format!("byol-views-{}.png", std::process::id()));
    let (ok, _, err) = byol(&[
        "augment",
        "--count",
        "3",
        "--scale",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let img = image::open(&out).expect("a PNG").to_rgb8();
    // 3 tiles of 32·2 px and 4 gutters across; 3 rows of tiles and 4 gutters down.
    assert_eq!((img.width(), img.height()), (3 * 64 + 16, 3 * 64 + 16));
    // The tiles are not blank.
    let distinct: std::collections::HashSet<_> = img.pixels().map(|p| p.0).collect();
    assert!(distinct.len() > 100, "{}", distinct.len());
    std::fs::remove_file(out).ok();
}

#[test]
fn bench_step_and_bench_augment_print_json_lines() {
    let (ok, out, err) = byol(&[
        "bench", "step", "--arch", "r18c32", "--batch", "2", "--steps", "1", "--warmup", "0",
    ]);
    assert!(ok, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(
        (line["cfg"].as_str(), line["batch"].as_u64()),
        (Some("r18c32"), Some(2))
    );
    assert!(line["loss"].as_f64().is_some_and(f64::is_finite), "{out}");
    let (ok, _, err) = byol(&["bench", "step", "--arch", "resnet7"]);
    assert!(!ok && err.contains("resnet18-cifar"), "{err}");
    let (ok, out, err) = byol(&[
        "bench", "augment", "--sizes", "16", "--batch", "8", "--reps", "1",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).expect("JSON");
    assert_eq!(v["size"], 16);
    assert!(
        v["device_views_per_sec"].as_f64().unwrap() > 0.0
            && v["host_views_per_sec"].as_f64().unwrap() > 0.0
    );
}

#[test]
fn ablate_over_two_seeds_writes_table_json_and_chart() {
    let dir = std::env::temp_dir().join(format!("byol-cli-ablate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let grid = dir.join("grid.toml");
    std::fs::write(&grid, "[[variant]]\nname = \"random-init\"\nrandom-init = true\n[[variant]]\nname = \"byol\"\nrelative-to = \"random-init\"\n").unwrap();
    let runs = dir.join("runs");
    let (ok, out, err) = byol(&[
        "ablate",
        "--grid",
        grid.to_str().unwrap(),
        "--run-dir",
        runs.to_str().unwrap(),
        "--seeds",
        "0,1",
        "--set",
        "model.encoder.base-width=4",
        "--set",
        "model.projector.hidden=32",
        "--set",
        "model.predictor.hidden=32",
        "--set",
        "data.image-size=16",
        "--set",
        "data.synthetic.train-per-class=8",
        "--set",
        "data.synthetic.test-per-class=4",
        "--set",
        "eval.knn.k=5",
        "--set",
        "train.knn-every-epochs=1",
        "--batch-size",
        "8",
        "--epochs",
        "2",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("| byol | 0, 1 |") && out.contains("2 variants, 4 runs"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join("ablation.json")).unwrap())
            .unwrap();
    let rows = json["runs"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    // Each trained run's kNN after epochs 1 and 2 (steps 10 and 20); none for a random init.
    for row in rows {
        let steps: Vec<u64> = row["evals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[0].as_u64().unwrap())
            .collect();
        let want: &[u64] = if row["random_init"] == true {
            &[]
        } else {
            &[10, 20]
        };
        assert_eq!(steps, want, "{row}");
    }
    let png = image::open(runs.join("ablation.png"))
        .expect("ablation.png is a PNG")
        .to_rgb8();
    // The kNN bars (2 variants), the difference bars (1 variant relative to another), kNN along
    // training, one loss panel.
    assert_eq!(
        (png.width(), png.height()),
        (1200, (90 + 34 * 2) + (90 + 34) + 380 + 260)
    );
    assert!(
        png.pixels().filter(|p| p.0 != [255, 255, 255]).count() > 10_000,
        "ablation.png is nearly blank"
    );
    // The difference panel holds a coloured bar (text, axes and dots are grey or black).
    let coloured = (158..282)
        .flat_map(|y| (0..1200).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let [r, g, b] = png.get_pixel(x, y).0.map(i32::from);
            (r - g).abs().max((g - b).abs()).max((r - b).abs()) > 40
        });
    assert!(coloured.count() > 500, "no bar in the difference panel");
    assert!(
        runs.join("byol/seed-1/curves.png").exists()
            && !runs.join("random-init/seed-0/curves.png").exists()
    );
}

/// `byol transfer segment` on a checkpoint's encoder, on its random-init one and on an encoder
/// written by `eval finetune --save-encoder`; `transfer mosaics` writes the VOC layout that
/// `--dataset voc:` reads back; a missing split or folder is a named error.
#[test]
fn transfer_segment_from_a_checkpoint_an_export_and_voc_files() {
    let dir = std::env::temp_dir().join(format!("byol-cli-segment-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.join("run");
    let d = d.to_str().unwrap();
    let mut args = vec![
        "pretrain",
        "--run-dir",
        d,
        "--max-steps",
        "2",
        "--no-baseline",
    ];
    args.extend(TINY);
    let (ok, _, err) = byol(&args);
    assert!(ok, "{err}");
    let small = [
        "--epochs",
        "1",
        "--set",
        "transfer.segment.data.train=16",
        "--set",
        "transfer.segment.data.val=4",
        "--set",
        "transfer.segment.data.tile=16",
        "--set",
        "transfer.segment.head-channels=8",
        "--set",
        "transfer.segment.batch-size=8",
        "--set",
        "transfer.segment.crop=32",
    ];
    let out_dir = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let segment = |source: &[&str], out: &str, extra: &[&str]| {
        let mut args = vec!["transfer", "segment", "--out", out];
        args.extend(source);
        args.extend(small);
        args.extend(extra);
        byol(&args)
    };
    let seg = out_dir("seg");
    let (ok, out, err) = segment(&["--checkpoint", d], &seg, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("(BYOL-trained encoder, 16 training / 4 validation images, 2 steps): mIoU"),
        "{out}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("seg/segment.json")).unwrap())
            .unwrap();
    assert_eq!(report["result"]["val"]["pixels"], 4 * 32 * 32);
    let png = image::open(dir.join("seg/predictions.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(png.dimensions(), (3 * 96 + 8, 4 * 96 + 3 * 4));
    // The folder of a finished transfer run is not written over (it replaced segment.json).
    let (ok, _, err) = segment(&["--checkpoint", d], &seg, &[]);
    assert!(!ok && err.contains("already holds `segment.json`"), "{err}");
    let (ok, out, err) = segment(
        &["--checkpoint", d, "--random-init"],
        &out_dir("seg-random"),
        &[],
    );
    assert!(ok && out.contains("(random-init encoder,"), "{out}{err}");
    // The supervised baseline's path: fine-tune with labels, save, transfer.
    let sup = out_dir("sup.safetensors");
    let (ok, out, err) = byol(&[
        "eval",
        "finetune",
        "--checkpoint",
        d,
        "--random-init",
        "--labels",
        "100%",
        "--epochs",
        "1",
        "--save-encoder",
        &sup,
    ]);
    assert!(
        ok && out.contains("wrote the fine-tuned encoder"),
        "{out}{err}"
    );
    let (ok, out, err) = segment(
        &[
            "--encoder",
            &sup,
            "--config",
            "small-cpu",
            "--data",
            "synthetic",
        ],
        &out_dir("seg-sup"),
        &["--set", "data.image-size=16"],
    );
    assert!(ok && out.contains("(imported encoder,"), "{out}{err}");
    // The mosaics in VOC's layout, read back.
    let voc = out_dir("voc");
    let mut args = vec!["transfer", "mosaics", "--checkpoint", d, "--out", &voc];
    args.extend(&small[2..]);
    let (ok, out, err) = byol(&args);
    assert!(
        ok && out.contains("wrote 16 training and 4 validation mosaics"),
        "{out}{err}"
    );
    let (ok, out, err) = segment(
        &["--checkpoint", d],
        &out_dir("seg-voc"),
        &["--dataset", &format!("voc:{voc}")],
    );
    assert!(
        ok && out.contains("16 training / 4 validation images") && out.contains("disc"),
        "{out}{err}"
    );
    // The classes are `classes.txt`'s (written with the mosaics): labels beyond it are an error.
    std::fs::write(dir.join("voc/classes.txt"), "a\nb\n").unwrap();
    let (ok, _, err) = segment(
        &["--checkpoint", d],
        &out_dir("seg-voc-classes"),
        &["--dataset", &format!("voc:{voc}")],
    );
    assert!(
        !ok && err.contains("SegmentationClass/") && err.contains("outside the 2 declared classes"),
        "{err}"
    );
    std::fs::remove_file(dir.join("voc/ImageSets/Segmentation/val.txt")).unwrap();
    let (ok, _, err) = segment(
        &["--checkpoint", d],
        &out_dir("seg-voc2"),
        &["--dataset", &format!("voc:{voc}")],
    );
    assert!(!ok && err.contains("val.txt"), "{err}");
    let (ok, _, err) = segment(
        &["--checkpoint", d],
        &out_dir("seg-voc3"),
        &["--dataset", "voc"],
    );
    assert!(
        !ok && err.contains("expected `mosaic`, `mosaic:<grid>` or `voc:<path>`"),
        "{err}"
    );
    // `--data` where nothing reads it is refused (it was silently ignored).
    let (ok, _, err) = segment(
        &["--checkpoint", d, "--data", "synthetic"],
        &out_dir("seg-voc4"),
        &["--dataset", &format!("voc:{voc}")],
    );
    assert!(!ok && err.contains("drop --data"), "{err}");
    let (ok, _, err) = byol(&[
        "transfer",
        "depth",
        "--checkpoint",
        d,
        "--data",
        "synthetic",
        "--out",
        &out_dir("depth-data"),
    ]);
    assert!(
        !ok && err.contains("transfer depth reads its own data"),
        "{err}"
    );
    // Depth: on the built-in scenes, and on the same scenes written as files.
    let tiny_depth = ["--epochs", "1", "--set", "transfer.depth.batch-size=4"];
    let depth_out = out_dir("depth");
    let (ok, out, err) = byol(
        &[
            &["transfer", "depth", "--checkpoint", d, "--out", &depth_out][..],
            &[
                "--set",
                "transfer.depth.data.train=8",
                "--set",
                "transfer.depth.data.val=2",
            ],
            &tiny_depth,
        ]
        .concat(),
    );
    assert!(
        ok && out
            .contains("(BYOL-trained encoder, 8 training / 2 validation images, 2 steps): δ<1.25"),
        "{out}{err}"
    );
    assert!(dir.join("depth/depth.json").is_file() && dir.join("depth/predictions.png").is_file());
    let scenes = out_dir("scenes");
    let (ok, out, err) = byol(&[
        "transfer", "scenes", "--out", &scenes, "--train", "8", "--val", "2", "--size", "32",
    ]);
    assert!(
        ok && out.contains("wrote 8 training and 2 validation scenes"),
        "{out}{err}"
    );
    let folder = format!("folder:{scenes}");
    let (files_out, files_out2) = (out_dir("depth-files"), out_dir("depth-files2"));
    let from_files = |out: &str| {
        let mut args = vec![
            "transfer",
            "depth",
            "--checkpoint",
            d,
            "--out",
            out,
            "--dataset",
            &folder,
        ];
        args.extend(tiny_depth);
        byol(&args)
    };
    let (ok, out, err) = from_files(&files_out);
    assert!(
        ok && out.contains("8 training / 2 validation images"),
        "{out}{err}"
    );
    image::GrayImage::new(32, 32)
        .save(dir.join("scenes/val/depth/val-000000.png"))
        .unwrap();
    let (ok, _, err) = from_files(&files_out2);
    assert!(
        !ok && err.contains("val-000000.png") && err.contains("16-bit"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
