//! `masksub recipes [--show NAME]`: the shipped training recipes.

use anyhow::Result;
use clap::Args;
use masksub_cli::recipe;

#[derive(Args, Debug)]
pub struct RecipesArgs {
    /// Print this recipe fully resolved (every field, defaults included) as TOML, with its
    /// forward FLOPs per image as a closing comment
    #[arg(long)]
    show: Option<String>,
}

/// `# forward GFLOPs per image: main X, sub Y` (what `cargo xtask reproduce` prices a plan by).
fn flops_comment(cfg: &masksub_cli::TrainConfig) -> Result<String> {
    let spec = masksub_models::registry::lookup(&cfg.model)?.with_kwargs(&cfg.model_kwargs)?;
    let arch = spec.arch.config();
    let Some(main) = arch.forward_flops(None) else {
        return Ok("# forward GFLOPs per image: unknown for this model\n".into());
    };
    let sub = match cfg.sub {
        masksub_core::SubModel::None => 0.0,
        masksub_core::SubModel::Masking { ratio } => {
            arch.forward_flops(Some(ratio)).unwrap_or(main)
        }
        _ => main,
    };
    Ok(format!(
        "# forward GFLOPs per image: main {:.3}, sub {:.3}\n",
        main / 1e9,
        sub / 1e9
    ))
}

pub fn run(args: RecipesArgs) -> Result<()> {
    if let Some(name) = args.show {
        let cfg = recipe::by_name(&name)?;
        print!("{}{}", toml::to_string_pretty(&cfg)?, flops_comment(&cfg)?);
        return Ok(());
    }
    for name in recipe::names() {
        println!("{name:<28} {}", recipe::summary(name).unwrap_or_default());
    }
    Ok(())
}
