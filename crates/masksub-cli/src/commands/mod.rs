//! One file per subcommand.

pub mod bench;
pub mod bench_data;
pub mod data;
pub mod eval;
pub mod models;
pub mod recipes;
pub mod train;
