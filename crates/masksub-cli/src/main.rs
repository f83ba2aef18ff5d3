//! `masksub`: train and evaluate image classifiers with MaskSub.

use clap::{Parser, Subcommand};

mod commands;

// glibc malloc makes candle training ~1.5x slower on this workload (many short-lived buffers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "masksub",
    version,
    about = "MaskSub (masking augmentation for supervised learning) training for image classifiers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (default: small ViT, MaskSub r=0.5, on the embedded Fashion-MNIST).
    Train(Box<commands::train::TrainArgs>),
    /// Evaluate a checkpoint: top-1 / top-5 / loss on the test split.
    Eval(commands::eval::EvalArgs),
    /// List the registered models.
    Models(commands::models::ModelsArgs),
    /// Convert and inspect WebDataset shards.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// List the shipped training recipes (`train --recipe NAME`).
    Recipes(commands::recipes::RecipesArgs),
    /// Measure training-step, inference or data-pipeline throughput.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_e` in mimalloc v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory instead of returning it to the OS: a training step frees and re-allocates
/// the same large buffers every iteration, and re-faulting them (the kernel zeroing fresh pages)
/// cost ~25% of step time here. Honour a user's MIMALLOC_PURGE_DELAY if set.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide allocator option; called before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => commands::train::run(*a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Models(a) => commands::models::run(a),
        Command::Data(c) => commands::data::run(c),
        Command::Bench(c) => commands::bench::run(c),
        Command::Recipes(a) => commands::recipes::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {}", masksub_cli::error_text::error_text(&e));
        std::process::exit(1);
    }
}
