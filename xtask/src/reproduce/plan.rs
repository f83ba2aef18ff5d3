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
    pub paper: PaperRef,
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
        paper: DEIT3_B,
    },
    Pair {
        name: "resnet_small_fmnist",
        recipe: "fmnist_resnet_small",
        paper: PaperRef {
            setting: "ResNet-50 RSB A2",
            baseline: None,
            masksub: None,
            gain: 0.3,
        },
    },
    Pair {
        name: "swin_small_fmnist",
        recipe: "fmnist_swin_small",
        paper: PaperRef {
            setting: "Swin-T",
            baseline: None,
            masksub: None,
            gain: 0.1,
        },
    },
];

/// Paper scale: the paper's recipes on ImageNet shards.
pub const PAPER: &[Pair] = &[
    Pair {
        name: "deit3_vit_b_400ep",
        recipe: "deit3_vit_b_400ep",
        paper: DEIT3_B,
    },
    Pair {
        name: "mae_ft_vit_b",
        recipe: "mae_ft_vit_b",
        paper: PaperRef {
            setting: "MAE fine-tune ViT-B",
            baseline: Some(83.6),
            masksub: Some(83.9),
            gain: 0.3,
        },
    },
];

/// The two arms of a pair.
pub const ARMS: [&str; 2] = ["baseline", "masksub"];
