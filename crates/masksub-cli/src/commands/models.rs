//! `masksub models [--pretrained] [PATTERN]`: the registry, or its pretrained tags.

use anyhow::Result;
use clap::Args;
use masksub_models::{pretrained, registry};

#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// List the pretrained tags (`arch.tag`: Hub repo, license, preprocessing)
    #[arg(long)]
    pretrained: bool,
    /// Only names containing this text
    pattern: Option<String>,
}

pub fn run(args: ModelsArgs) -> Result<()> {
    let wanted = |name: &str| args.pattern.as_deref().is_none_or(|p| name.contains(p));
    if args.pretrained {
        for p in pretrained::PRETRAINED.iter().filter(|p| wanted(p.name)) {
            let source = p
                .hub
                .map_or("local file (--checkpoint-path)".to_string(), |(r, f)| {
                    format!("hf://{r}/{f}")
                });
            let built = if registry::lookup(p.name).is_ok() {
                ""
            } else {
                "  [architecture not in this build]"
            };
            println!(
                "{:<38} {source:<62} {:?}  license {}  {}px crop_pct {}  classes {}{built}",
                p.name, p.format, p.license, p.img_size, p.crop_pct, p.num_classes
            );
        }
        return Ok(());
    }
    for name in registry::names() {
        if !wanted(name) {
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
