//! One file per subcommand.

pub mod bench;
pub mod eval;
pub mod models;
pub mod recipes;
pub mod train;
