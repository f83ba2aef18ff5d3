//! ImageFolder: `root/<class>/<image>` (or `root/<split>/<class>/<image>`), classes sorted by
//! name and numbered from 0, as torchvision's `ImageFolder`.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::wds::{split_key, IMAGE_EXTS};

/// The images of an ImageFolder split with their class index.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    /// (path, label), sorted by class then file name.
    pub files: Vec<(PathBuf, u32)>,
}

impl ImageFolder {
    /// Scans `root/<split>` if that folder exists, else `root`.
    pub fn open(root: &Path, split: &str) -> Result<Self> {
        let base = if root.join(split).is_dir() {
            root.join(split)
        } else {
            root.to_path_buf()
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DataError::Io { path, source }
        };
        let mut classes: Vec<String> = std::fs::read_dir(&base)
            .map_err(io(&base))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(DataError::Spec {
                spec: base.display().to_string(),
                msg: "no class folders".into(),
            });
        }
        let mut files = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let dir = base.join(class);
            let mut imgs: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(io(&dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| split_key(&n.to_string_lossy()).map(|(_, e)| e))
                        .is_some_and(|e| IMAGE_EXTS.contains(&e.as_str()))
                })
                .collect();
            imgs.sort();
            files.extend(imgs.into_iter().map(|p| (p, label as u32)));
        }
        if files.is_empty() {
            return Err(DataError::Spec {
                spec: base.display().to_string(),
                msg: format!(
                    "no images for split `{split}` (class folders: {})",
                    classes.join(", ")
                ),
            });
        }
        Ok(ImageFolder {
            root: base,
            classes,
            files,
        })
    }
}
