//! The official MAE pre-training checkpoint (`mae_pretrain_vit_base.pth`, state dict under
//! `model`): the encoder already uses timm's keys; the decoder (`decoder_*`) and `mask_token`
//! exist only for pre-training and are dropped, as MAE's `main_finetune.py` ignores them.

use super::StateDict;

pub fn remap(sd: StateDict) -> (StateDict, Vec<String>) {
    let before = sd.len();
    let out: StateDict = sd
        .into_iter()
        .filter(|(k, _)| !(k.starts_with("decoder") || k == "mask_token"))
        .collect();
    let dropped = before - out.len();
    (
        out,
        vec![format!(
            "dropped {dropped} MAE decoder / mask_token tensors"
        )],
    )
}
