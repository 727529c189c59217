//! `byol eval`, `embed` and `export`: what a trained encoder is worth, and the encoder itself.

use crate::args::*;
use crate::progress::stop_on_signal;
use anyhow::{Context, Result};
use byol::ExperimentConfig;
use byol::workflow::{self, Evaluation, EvaluationResult, Settings};

/// The checkpoint of `args` with its `--data` and `--set` flags, then `edit`.
pub(crate) fn evaluation(
    args: &EvalArgs,
    edit: impl FnOnce(&mut ExperimentConfig),
) -> Result<Evaluation> {
    let settings = Settings {
        set: args.sets.clone(),
        data: args.data.clone(),
        ..Default::default()
    };
    Ok(Evaluation::from_checkpoint(
        &args.checkpoint,
        &settings,
        edit,
        args.random_init,
    )?)
}

pub(crate) fn eval_knn(args: KnnArgs) -> Result<()> {
    let e = evaluation(&args.eval, |c| {
        c.eval.knn.k = args.k.unwrap_or(c.eval.knn.k);
        c.eval.knn.temperature = args.temperature.unwrap_or(c.eval.knn.temperature);
    })?;
    let r = byol::train::knn_of_encoder(
        &e.encoder,
        &e.config,
        &e.splits()?.train,
        &e.splits()?.test,
        &e.device,
    )?;
    let k = &e.config.eval.knn;
    println!(
        "kNN (k={}, T={}) on {} test images, {}: top-1 {:.2}%  top-5 {:.2}%",
        k.k,
        k.temperature,
        e.splits()?.test.len(),
        e.label,
        100.0 * r.top1,
        100.0 * r.top5
    );
    record(&e, EvaluationResult::Knn(r));
    Ok(())
}

/// Write an evaluation's result into its run directory, or say why it was not.
pub(crate) fn record(e: &Evaluation, result: EvaluationResult) {
    match e.record(result) {
        Ok(Some(path)) => println!("recorded in {}", path.display()),
        Ok(None) => {}
        Err(err) => eprintln!("warning: the result is not recorded in the run directory: {err}"),
    }
}

pub(crate) fn eval_linear(args: LinearArgs) -> Result<()> {
    let e = evaluation(&args.eval, |c| {
        c.eval.linear.epochs = args.epochs.unwrap_or(c.eval.linear.epochs);
        if let Some(lrs) = &args.lrs {
            c.eval.linear.learning_rates = lrs.clone();
        }
    })?;
    let r = byol::train::linear_of_encoder(
        &e.encoder,
        &e.config,
        &e.splits()?.train,
        &e.splits()?.test,
        &e.device,
    )?;
    for (lr, acc) in &r.sweep {
        println!("  lr {lr:<6} validation top-1 {:.2}%", 100.0 * acc);
    }
    println!(
        "linear evaluation on {} test images, {} (lr {}): top-1 {:.2}%  top-5 {:.2}%  (train top-1 {:.2}%)",
        e.splits()?.test.len(),
        e.label,
        r.best_lr,
        100.0 * r.test.top1,
        100.0 * r.test.top5,
        100.0 * r.train.top1
    );
    record(&e, EvaluationResult::Linear(r));
    Ok(())
}

pub(crate) fn eval_finetune(args: FinetuneArgs) -> Result<()> {
    let e = evaluation(&args.eval, |c| {
        let f = &mut c.eval.finetune;
        f.label_fraction = args.labels;
        f.epochs = args.epochs.unwrap_or(f.epochs);
        f.learning_rates = args.lr.clone().unwrap_or_else(|| f.learning_rates.clone());
        f.from = args.from.unwrap_or(f.from);
    })?;
    let test_images = e.splits()?.test.len();
    // Ctrl-C (or SIGTERM) ends fine-tuning after its step: it keeps no checkpoint to resume.
    let interrupt = stop_on_signal("fine-tuning keeps no checkpoint: run it again")?;
    // Fine-tuning starts from copies of its own (`finetune_of_network`): `e`'s network stays as it was.
    let (r, tuned) = byol::train::finetune_of_network(
        e.encoder.clone(),
        Some(e.projector.clone()),
        &e.config,
        (&e.splits()?.train, &e.splits()?.test),
        (&e.device, Some(&interrupt)),
    )?;
    for (lr, top1) in &r.sweep {
        println!(
            "learning rate {lr}: top-1 {:.2}% on {} held-out training images",
            100.0 * top1,
            r.validation_images
        );
    }
    println!(
        "fine-tuning on {} labelled images ({}, from the {}, learning rate {}), {test_images} test images: top-1 {:.2}%  top-5 {:.2}%",
        r.labelled_images,
        e.label,
        if e.config.eval.finetune.from == byol::eval::FinetuneFrom::Encoder {
            "encoder"
        } else {
            "projector's first layer"
        },
        r.learning_rate,
        100.0 * r.test.top1,
        100.0 * r.test.top5
    );
    record(&e, EvaluationResult::Finetune(r.clone()));
    if let Some(path) = &args.save_model {
        byol::eval::classifier::save(&tuned, &workflow::classifier_info(&e, &r)?, path)?;
        println!(
            "wrote the fine-tuned classifier (a teacher for `byol distill`) to {}",
            path.display()
        );
    }
    if let Some(path) = &args.save_encoder {
        let c = &e.config;
        byol::model::export::export_encoder(
            &tuned.encoder,
            &c.model.encoder,
            c.data.image_size,
            None,
            path,
        )?;
        println!("wrote the fine-tuned encoder to {}", path.display());
        println!(
            "{}",
            byol::model::export::loader_hint(&c.model.encoder, c.data.image_size)
        );
    }
    Ok(())
}

pub(crate) fn embed(args: EmbedArgs) -> Result<()> {
    let e = evaluation(&args.eval, |_| {})?;
    let (train, test) = e.embed(&args.out)?;
    println!(
        "wrote {} × {} features ({}) to {}",
        train.len() + test.len(),
        train.dim,
        e.label,
        args.out.display()
    );
    if let Some(png) = &args.plot {
        let (points, labels) = e.tsne_map(&test, args.plot_points, args.perplexity)?;
        let title = format!(
            "t-SNE of {} test representations ({}), perplexity {}",
            points.len(),
            e.label,
            args.perplexity
        );
        crate::chart::embedding(&points, &labels, e.classes()?, &title, png)
            .with_context(|| format!("writing {}", png.display()))?;
        println!(
            "wrote the t-SNE map of {} test images to {}",
            points.len(),
            png.display()
        );
    }
    Ok(())
}

pub(crate) fn export(args: ExportArgs) -> Result<()> {
    let loaded = byol::train::checkpoint::read_path_or_dir(&args.checkpoint)?;
    let device = loaded.config.backend.device()?;
    let online = loaded.online(&device)?;
    let projector = args.with_projector.then_some(&online.projector);
    let cfg = &loaded.config;
    byol::model::export::export_encoder(
        &online.encoder,
        &cfg.model.encoder,
        cfg.data.image_size,
        projector,
        &args.out,
    )?;
    let with = if args.with_projector {
        ", and the projector as nn.Sequential under projector.,"
    } else {
        ""
    };
    let names = match cfg.model.encoder {
        byol::model::EncoderConfig::ResNet(_) => "torchvision resnet",
        byol::model::EncoderConfig::Vit(_) => "timm VisionTransformer",
    };
    println!(
        "wrote the encoder with {names} names{with} to {}",
        args.out.display()
    );
    println!(
        "{}",
        byol::model::export::loader_hint(&cfg.model.encoder, cfg.data.image_size)
    );
    Ok(())
}
