//! `byol distill`: what it runs and prints.

use crate::args::distill::DistillArgs;
use crate::progress::{Bar, stop_on_signal};
use anyhow::Result;
use byol::distill::{DistillOptions, DistillOutcome};
use byol::workflow::DistillSetup;

/// Run `byol distill`.
pub fn run(a: DistillArgs) -> Result<()> {
    let settings = a.common.settings();
    let setup = DistillSetup::new(
        a.teacher.as_deref(),
        &a.config,
        &settings,
        a.resume.as_deref(),
        |c| {
            let d = &mut c.distill;
            d.epochs = a.epochs.unwrap_or(d.epochs);
            d.batch_size = a.batch_size.unwrap_or(d.batch_size);
            d.learning_rate = a.lr.unwrap_or(d.learning_rate);
            d.temperature = a.temperature.unwrap_or(d.temperature);
            d.labelled_weight = a.labelled_weight.unwrap_or(d.labelled_weight);
            d.student.base_width = a.student_base_width.or(d.student.base_width);
            d.student.arch = a.student_arch.or(d.student.arch);
        },
    )?;
    let dir = match (&a.resume, &a.run_dir) {
        (Some(d), _) | (None, Some(d)) => d.clone(),
        (None, None) => byol::workflow::new_run_dir("distill", std::time::SystemTime::now()),
    };
    let interrupt = stop_on_signal(&format!(
        "resume from the last checkpoint with: byol distill --resume {}",
        dir.display()
    ))?;
    println!(
        "distilling {} ({} classes) into run directory {}: {} unlabelled images, {} test images",
        setup.teacher.path.display(),
        setup.teacher.info.classes.len(),
        dir.display(),
        setup.splits.train.len(),
        setup.splits.test.len()
    );
    let opts = DistillOptions {
        resume: a.resume.is_some(),
        max_steps: a.max_steps,
        interrupt: Some(interrupt),
    };
    let mut bar = Bar::new();
    let outcome = setup.run(&dir, &opts, &mut bar)?;
    bar.pb.finish_and_clear();
    match outcome {
        DistillOutcome::Stopped { step } => println!(
            "stopped at step {step} with a checkpoint; continue with: byol distill --resume {}",
            dir.display()
        ),
        DistillOutcome::Finished(r) => {
            let width = |e: &byol::model::ResNetConfig| {
                format!("{:?} at base width {}", e.arch, e.base_width).to_lowercase()
            };
            println!(
                "distilled {} steps on {} unlabelled images ({} labelled in the loss)",
                r.steps, r.unlabelled_images, r.labelled_images
            );
            println!(
                "teacher {} ({} parameters): top-1 {:.2}%  top-5 {:.2}%",
                width(&r.teacher_encoder),
                r.teacher_parameters,
                100.0 * r.teacher.top1,
                100.0 * r.teacher.top5
            );
            println!(
                "student {} ({} parameters): top-1 {:.2}%  top-5 {:.2}%",
                width(&r.student_encoder),
                r.student_parameters,
                100.0 * r.student.top1,
                100.0 * r.student.top5
            );
            println!(
                "wrote {} and {} in {}",
                byol::train::run_dir::STUDENT,
                byol::train::run_dir::DISTILL,
                dir.display()
            );
        }
    }
    Ok(())
}
