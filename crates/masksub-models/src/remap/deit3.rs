//! The official DeiT-III release names LayerScale `blocks.N.gamma_1` / `gamma_2`; timm (and we)
//! name it `blocks.N.ls1.gamma` / `ls2.gamma`.

use super::StateDict;

pub fn remap(sd: StateDict) -> (StateDict, Vec<String>) {
    let mut renamed = 0;
    let out = sd
        .into_iter()
        .map(|(k, v)| {
            for (from, to) in [(".gamma_1", ".ls1.gamma"), (".gamma_2", ".ls2.gamma")] {
                if let Some(stem) = k.strip_suffix(from) {
                    renamed += 1;
                    return (format!("{stem}{to}"), v);
                }
            }
            (k, v)
        })
        .collect();
    (
        out,
        vec![format!(
            "renamed {renamed} DeiT-III gamma_1/gamma_2 to ls1/ls2.gamma"
        )],
    )
}
