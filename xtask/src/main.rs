//! Developer and research workflows for masksub: `cargo xtask <command>`.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench_data;
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
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::SubCost(a) => sub_cost::run(a),
        Command::BenchData(a) => bench_data::run_bench(a),
    }
}
