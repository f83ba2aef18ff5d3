//! Developer and research workflows for masksub: `cargo xtask <command>`.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod bench_data;
mod common;
mod reproduce;
mod scaling;
mod sub_cost;

#[derive(Parser)]
#[command(name = "xtask", about = "masksub developer workflows")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure training img/s of plain vs MaskSub steps (same model, same data) and write the
    /// "MaskSub step cost" section of BENCHMARKS.md.
    SubCost(sub_cost::Args),
    /// Data pipeline img/s of masksub vs PIL + torchvision on the same JPEGs; writes the
    /// "Data pipeline" section of BENCHMARKS.md.
    BenchData(bench_data::Args),
    /// Measure data-parallel img/s at 1 and 2 MPI ranks and the all-reduce share of a step,
    /// and write the "Data-parallel scaling" section of BENCHMARKS.md (needs Open MPI).
    Scaling(scaling::Args),
    /// Time masksub's training step against PyTorch eager + timm (same model, recipe, threads)
    /// and write the "Training speed" section of BENCHMARKS.md (needs torch + timm).
    Bench(bench::Args),
    /// Run the paper's comparison (baseline vs MaskSub per recipe, several seeds) and write
    /// reproduce/<date>/results.md with plots; resume-safe.
    Reproduce(reproduce::Args),
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::SubCost(a) => sub_cost::run(a),
        Command::BenchData(a) => bench_data::run_bench(a),
        Command::Scaling(a) => scaling::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Reproduce(a) => reproduce::run(a),
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
