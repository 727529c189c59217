//! SimCLR v2's recipe through the binary: fine-tune from the projector's first layer, save the
//! classifier, distil it into a smaller student, stopped and resumed.

mod common;

use common::{TINY, byol};

#[test]
fn finetune_saves_a_teacher_that_distill_teaches_a_smaller_student_across_a_resume() {
    let dir = std::env::temp_dir().join(format!("byol-cli-distill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (pre, teacher, run) = (path("pre"), path("teacher.safetensors"), path("distill"));
    let mut args = vec![
        "pretrain",
        "--run-dir",
        &pre,
        "--max-steps",
        "2",
        "--no-baseline",
        "--set",
        "model.projector.layers=3",
    ];
    args.extend(TINY);
    let (ok, _, err) = byol(&args);
    assert!(ok, "{err}");
    let (ok, out, err) = byol(&[
        "eval",
        "finetune",
        "--checkpoint",
        &pre,
        "--labels",
        "25%",
        "--epochs",
        "1",
        "--from",
        "projector:1",
        "--save-model",
        &teacher,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("from the projector's first layer")
            && out.contains("teacher for `byol distill`"),
        "{out}"
    );
    let distill = |extra: &[&str]| {
        let mut args = vec![
            "distill",
            "--config",
            "small-cpu",
            "--set",
            "data.synthetic.train-per-class=8",
            "--set",
            "data.synthetic.test-per-class=4",
        ];
        args.extend(extra);
        byol(&args)
    };
    let (ok, _, err) = distill(&["--run-dir", &run]);
    assert!(!ok && err.contains("--teacher"), "{err}");
    let (ok, out, err) = distill(&[
        "--teacher",
        &teacher,
        "--run-dir",
        &run,
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--student-base-width",
        "2",
        "--max-steps",
        "3",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("80 unlabelled images") && out.contains("stopped at step 3"),
        "{out}"
    );
    let (ok, _, err) = distill(&["--resume", &run, "--set", "distill.temperature=4"]);
    assert!(
        !ok && err.contains("distill.temperature: 1.0 → 4.0"),
        "{err}"
    );
    let (ok, out, err) = byol(&["distill", "--resume", &run]);
    assert!(ok, "{err}");
    assert!(
        out.contains("distilled 10 steps on 80 unlabelled images")
            && out.contains("student resnet18 at base width 2"),
        "{out}"
    );
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("distill/distill.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            result["student_encoder"]["base-width"].as_u64(),
            result["teacher_encoder"]["base-width"].as_u64()
        ),
        (Some(2), Some(4))
    );
    assert!(result["student_parameters"].as_u64() < result["teacher_parameters"].as_u64());
    // A classifier file's encoder is an encoder for every evaluation: the student's with its
    // run's config (the data it was distilled on), the teacher's with the flags given.
    let (ok, out, err) = byol(&[
        "eval",
        "knn",
        "--checkpoint",
        &path("distill/student.safetensors"),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("on 40 test images, distilled student's encoder: top-1"),
        "{out}"
    );
    let small = [
        "--set",
        "data.synthetic.train-per-class=8",
        "--set",
        "data.synthetic.test-per-class=4",
    ];
    let (ok, out, err) = byol(&[&["eval", "knn", "--checkpoint", &teacher][..], &small].concat());
    assert!(ok, "{err}");
    assert!(
        out.contains("fine-tuned classifier's encoder: top-1"),
        "{out}"
    );
    // The student is itself a classifier file: it can teach in turn.
    let (ok, out, err) = distill(&[
        "--teacher",
        &path("distill/student.safetensors"),
        "--run-dir",
        &path("again"),
        "--epochs",
        "1",
        "--batch-size",
        "16",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("distilled 5 steps"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
