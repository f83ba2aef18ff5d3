//! What `cargo xtask reproduce` runs: pairs of arms (baseline, MaskSub) of a recipe, and the
//! paper's ImageNet numbers each pair stands for.

/// The paper's ImageNet-1k top-1 for a setting (None where the paper gives only the gain).
#[derive(Debug, Clone, Copy)]
pub struct PaperRef {
    pub setting: &'static str,
    pub baseline: Option<f64>,
    pub masksub: Option<f64>,
    pub gain: f64,
}

/// One comparison: a recipe trained with `sub = none` and with the recipe's sub-model.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    /// Folder and table name.
    pub name: &'static str,
    /// `masksub train --recipe` name.
    pub recipe: &'static str,
    /// A second stage started from the first's final weights (DeiT-III's 224 px fine-tune),
    /// with the same sub-model; the pair is measured after it.
    pub finetune: Option<&'static str>,
    pub paper: PaperRef,
}

/// A pair whose paper reference gives only the gain.
const fn gain_only(setting: &'static str, gain: f64) -> PaperRef {
    PaperRef {
        setting,
        baseline: None,
        masksub: None,
        gain,
    }
}

/// A one-stage paper-scale pair named as its recipe.
const fn paper_pair(recipe: &'static str, paper: PaperRef) -> Pair {
    Pair {
        name: recipe,
        recipe,
        finetune: None,
        paper,
    }
}

const DEIT3_B: PaperRef = PaperRef {
    setting: "DeiT-III ViT-B 400ep",
    baseline: Some(83.5),
    masksub: Some(84.1),
    gain: 0.6,
};

/// CPU scale: small models on the Fashion-MNIST data in the repository.
pub const CPU: &[Pair] = &[
    Pair {
        name: "vit_small_fmnist",
        recipe: "fmnist_vit_small",
        finetune: None,
        paper: DEIT3_B,
    },
    Pair {
        name: "resnet_small_fmnist",
        recipe: "fmnist_resnet_small",
        finetune: None,
        paper: gain_only("ResNet-50 RSB A2", 0.3),
    },
    Pair {
        name: "swin_small_fmnist",
        recipe: "fmnist_swin_small",
        finetune: None,
        paper: gain_only("Swin-T", 0.1),
    },
];

/// Paper scale: the paper's recipes on ImageNet shards (`recipes/*.toml`).
pub const PAPER: &[Pair] = &[
    Pair {
        name: "deit3_vit_b_400ep",
        recipe: "deit3_vit_b_400ep",
        finetune: Some("deit3_vit_b_ft224"),
        paper: DEIT3_B,
    },
    paper_pair(
        "mae_ft_vit_b",
        PaperRef {
            setting: "MAE fine-tune ViT-B",
            baseline: Some(83.6),
            masksub: Some(83.9),
            gain: 0.3,
        },
    ),
    paper_pair("swin_tiny_300ep", gain_only("Swin-T", 0.1)),
    paper_pair("swin_small_300ep", gain_only("Swin-S", 0.4)),
    paper_pair("swin_base_300ep", gain_only("Swin-B", 0.4)),
    paper_pair("rsb_a2_resnet50", gain_only("ResNet-50 RSB A2", 0.3)),
    paper_pair("rsb_a2_resnet101", gain_only("ResNet-101 RSB A2", 0.7)),
    paper_pair("rsb_a2_resnet152", gain_only("ResNet-152 RSB A2", 1.0)),
];

/// The two arms of a pair.
pub const ARMS: [&str; 2] = ["baseline", "masksub"];
