//! One file per subcommand.

pub mod bench;
pub mod data;
pub mod eval;
pub mod models;
pub mod train;
