//! The end of a pre-training run: the list of skipped images, the final evaluations and the
//! report.

use super::*;

impl Monitor {
    /// After the last step: the list of skipped images, the final kNN evaluation (and the
    /// random-init encoder's) of a finished run, the report (`eval.json`).
    pub fn finish(
        mut self,
        ctx: &Context,
        state: &TrainState,
        started: Instant,
        obs: &mut dyn Observer,
    ) -> Result<PretrainReport> {
        let (cfg, run, spe) = (ctx.cfg, ctx.run, ctx.schedules.steps_per_epoch);
        let train_seconds = self.train_started.elapsed().as_secs_f64();
        if !self.skipped.is_empty() {
            let list: Vec<SkippedImage> = self
                .skipped
                .iter()
                .map(|(file, reason)| SkippedImage {
                    file: file.clone(),
                    reason: reason.clone(),
                })
                .collect();
            run.write(run_dir::SKIPPED, &list)?;
        }
        if self.final_loss.is_nan()
            && let Some(loss) = self.last_loss.take()
        {
            self.final_loss = f64::from(loss.into_scalar::<f32>());
        }
        let finished = state.step == ctx.schedules.total_steps || self.stopped_by_time_budget;
        let (knn, random) = if finished && !has_labels(ctx.train) {
            obs.on_message(&format!(
                "no kNN evaluation: the training set has {} class(es), so every image has the same label and any accuracy would be 100 %; \
                 judge the run by its loss and collapse signal (metrics.jsonl) or its representations (`byol embed`)",
                ctx.train.classes.len()
            ));
            (None, None)
        } else if finished {
            obs.on_message("kNN evaluation of the trained encoder");
            let knn = knn_of_encoder(&state.online.encoder, cfg, ctx.train, ctx.test, ctx.device)?;
            self.record_eval(
                run,
                EvalReport {
                    step: state.step,
                    epoch: state.step / spe,
                    knn,
                },
                obs,
            )?;
            let random = if ctx.opts.compare_random {
                obs.on_message("kNN evaluation of the random-init encoder");
                Some(random_init_knn(cfg, ctx.train, ctx.test, ctx.device)?)
            } else {
                None
            };
            (Some(knn), random)
        } else {
            obs.on_message(&format!(
                "stopped at step {} of {}; continue with --resume",
                state.step, ctx.schedules.total_steps
            ));
            (None, None)
        };
        let report = PretrainReport {
            run_dir: run.path().to_path_buf(),
            steps: state.step,
            train_images: ctx.train.len(),
            test_images: ctx.test.len(),
            skipped_images: self.skipped.len(),
            lost_images: ctx.train.lost + ctx.test.lost,
            final_loss: self.final_loss,
            knn,
            random_init_knn: random,
            wall_seconds: started.elapsed().as_secs_f64(),
            train_seconds,
            stopped_by_time_budget: self.stopped_by_time_budget,
            online_linear_top1: self.online_linear_top1,
        };
        self.events.flush()?;
        if finished {
            run.write(run_dir::EVAL, &report)?;
        }
        Ok(report)
    }
}
