//! `byol`: the command-line front end. Parses flags (`args/`), hands each command to its file
//! (`commands/`), which resolves them into a validated `ExperimentConfig`, calls the library and
//! prints; the progress bar and Ctrl-C are `progress.rs`, the charts `chart.rs`.

mod args;
mod chart;
mod commands;
mod progress;

use anyhow::Result;
use args::{BenchCommand, Cli, Command, EvalCommand};
use clap::Parser;

fn run() -> Result<()> {
    let cli = Cli::parse();
    // An invalid BYOL_CPU_KERNELS is an error before any work, not a panic at the first layer.
    byol::model::kernels::CpuKernels::from_env()?;
    let (_, processes) = byol::collective::process_rank_and_count();
    if processes > 1 && !matches!(cli.command, Command::Pretrain(_)) {
        // Each process would run the whole command and write the same files.
        anyhow::bail!(
            "only `byol pretrain` runs on several processes; run this command once, without mpirun ({processes} processes here)"
        );
    }
    match cli.command {
        Command::Pretrain(a) => commands::pretrain::pretrain(a),
        Command::DumpConfig(a) => {
            print!("{}", a.settings().resolve(&a.config)?.to_toml());
            Ok(())
        }
        Command::Eval(EvalCommand::Knn(a)) => commands::eval::eval_knn(a),
        Command::Eval(EvalCommand::Linear(a)) => commands::eval::eval_linear(a),
        Command::Eval(EvalCommand::Finetune(a)) => commands::eval::eval_finetune(a),
        Command::Embed(a) => commands::eval::embed(a),
        Command::Export(a) => commands::eval::export(a),
        Command::Augment(a) => commands::data::augment(a),
        Command::Ablate(a) => commands::ablate::ablate(a),
        Command::Bench(BenchCommand::Augment(a)) => commands::bench::bench_augment(a),
        Command::Bench(BenchCommand::Step(a)) => commands::bench::bench_step(a),
        Command::Bench(BenchCommand::Decode(a)) => commands::bench::bench_decode(a),
        Command::Shard(a) => commands::data::shard(a),
        Command::Transfer(a) => commands::transfer::run(a),
        Command::Distill(a) => commands::distill::run(a),
    }
}

fn main() {
    byol_kernels::alloc::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,byol=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    #[cfg(feature = "mpi")]
    let _mpi = byol::collective::mpi::init().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    if let Err(e) = run() {
        // One of several processes: end them all (none waits on this one), naming the failure.
        #[cfg(feature = "mpi")]
        if let Some(w) = byol::collective::mpi::world().filter(|w| w.size() > 1) {
            w.abort(&format!("{e:#}"));
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
