//! `masksub`: train and evaluate image classifiers with MaskSub.

use clap::{Parser, Subcommand};

mod commands;

// glibc malloc makes candle training ~1.5x slower on this workload (many short-lived buffers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "masksub", version, about = "MaskSub (masking augmentation for supervised learning) training for image classifiers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (default: small ViT, MaskSub r=0.5, on the embedded Fashion-MNIST).
    Train(commands::train::TrainArgs),
    /// Evaluate a checkpoint: top-1 / top-5 / loss on the test split.
    Eval(commands::eval::EvalArgs),
    /// List the registered models.
    Models(commands::models::ModelsArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => commands::train::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Models(a) => commands::models::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
