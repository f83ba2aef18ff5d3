//! `masksub recipes [--show NAME]`: the shipped training recipes.

use anyhow::Result;
use clap::Args;
use masksub_cli::recipe;

#[derive(Args, Debug)]
pub struct RecipesArgs {
    /// Print this recipe fully resolved (every field, defaults included) as TOML
    #[arg(long)]
    show: Option<String>,
}

pub fn run(args: RecipesArgs) -> Result<()> {
    if let Some(name) = args.show {
        print!("{}", toml::to_string_pretty(&recipe::by_name(&name)?)?);
        return Ok(());
    }
    for name in recipe::names() {
        println!("{name:<28} {}", recipe::summary(name).unwrap_or_default());
    }
    Ok(())
}
