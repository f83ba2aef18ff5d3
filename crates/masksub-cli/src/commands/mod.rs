//! One file per subcommand.

pub mod eval;
pub mod models;
pub mod train;
