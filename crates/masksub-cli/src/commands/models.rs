//! `masksub models [PATTERN]`: the registry.

use anyhow::Result;
use clap::Args;
use masksub_models::registry;

#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Only names containing this text
    pattern: Option<String>,
}

pub fn run(args: ModelsArgs) -> Result<()> {
    for name in registry::names() {
        if args.pattern.as_deref().is_some_and(|p| !name.contains(p)) {
            continue;
        }
        let spec = registry::lookup(name)?;
        let (c, h, w) = spec.input_shape();
        let arch = spec.arch.config().describe();
        println!(
            "{name:<28} {arch:<22} input {c}x{h}x{w}  classes {}  crop_pct {}",
            spec.num_classes(),
            spec.crop_pct
        );
    }
    Ok(())
}
