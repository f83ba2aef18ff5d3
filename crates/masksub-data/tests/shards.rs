//! WebDataset shards on disk and in a Hugging Face hub cache: discovery, sharding by rank and
//! worker, bad-data handling (skip + count, or `--strict-data` errors naming shard and key).

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use masksub_data::decode::{encode, RgbImage};
use masksub_data::tar::TarWriter;
use masksub_data::writer::{ShardImageFormat, ShardWriter};
use masksub_data::{
    DataError, HubOptions, ImageAugConfig, StreamConfig, StreamDataset, StreamLoader,
};

/// A 12x10 PNG whose pixels encode `i`, so a sample can be recognised after the transform.
fn image(i: usize) -> RgbImage {
    RgbImage::filled(12, 10, [(i * 5) as u8, 100, 200])
}

/// `n` samples (label i % 3) in shards of `per` into `dir` with `_info.json`.
fn make_shards(dir: &Path, n: usize, per: usize) {
    let mut w = ShardWriter::new(dir, "t", "train", per, ShardImageFormat::Png).unwrap();
    for i in 0..n {
        w.write(&format!("s{i:03}"), &image(i), (i % 3) as u32)
            .unwrap();
    }
    w.finish(vec!["a".into(), "b".into(), "c".into()]).unwrap();
}

fn cfg(train: bool) -> StreamConfig {
    StreamConfig {
        batch_size: 2,
        workers: 2,
        shuffle_buffer: 4,
        seed: 1,
        rank: 0,
        world_size: 1,
        strict: false,
        train,
        repeats: 1,
        aug: ImageAugConfig {
            img_size: 8,
            mean: [0.0; 3],
            std: [1.0; 3],
            ..ImageAugConfig::default()
        },
        mixup: None,
        num_classes: 3,
    }
}

/// The red channel value (x 255) at pixel (0, 0) of every sample the loader yields.
fn ids(loader: &StreamLoader, epoch: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for b in loader.epoch(epoch) {
        let b = b.unwrap();
        let n = b.labels.dim(0).unwrap();
        let v = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for k in 0..n {
            out.push((v[k * 3 * 64] * 255.0 / 5.0).round() as usize);
        }
    }
    out
}

fn open(spec: &str) -> Arc<StreamDataset> {
    Arc::new(StreamDataset::from_shards(spec, "train", &HubOptions::default()).unwrap())
}

#[test]
fn folder_and_brace_pattern_resolve_the_same_shards_with_counts() {
    let dir = tempfile::tempdir().unwrap();
    make_shards(dir.path(), 10, 4);
    let a = open(&dir.path().to_string_lossy());
    let b = open(&format!(
        "{}/t-train-{{000000..000002}}.tar",
        dir.path().display()
    ));
    assert_eq!((a.num_samples, b.num_samples), (10, 10));
    assert_eq!(a.num_classes, Some(3));
    let missing = StreamDataset::from_shards(
        &format!("{}/t-train-{{000000..000003}}.tar", dir.path().display()),
        "train",
        &HubOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&missing, DataError::MissingShard { path } if path.ends_with("t-train-000003.tar")),
        "{missing}"
    );
}

#[test]
fn ranks_and_workers_together_see_every_sample_once() {
    let dir = tempfile::tempdir().unwrap();
    make_shards(dir.path(), 12, 2); // 6 shards
    let ds = open(&dir.path().to_string_lossy());
    // Evaluation over 2 ranks x 2 workers: disjoint, complete.
    let mut all = Vec::new();
    for rank in 0..2 {
        let c = StreamConfig {
            rank,
            world_size: 2,
            ..cfg(false)
        };
        all.extend(ids(
            &StreamLoader::new(ds.clone(), c, Device::Cpu).unwrap(),
            0,
        ));
    }
    all.sort();
    assert_eq!(all, (0..12).collect::<Vec<_>>());
    // Training, one rank: an epoch is a permutation; the next epoch another one.
    let l = StreamLoader::new(ds.clone(), cfg(true), Device::Cpu).unwrap();
    let (e0, e1) = (ids(&l, 0), ids(&l, 1));
    let mut s0 = e0.clone();
    s0.sort();
    assert_eq!(s0, (0..12).collect::<Vec<_>>());
    assert_ne!(e0, e1);
    assert_eq!(e0, ids(&l, 0), "an epoch is reproducible");
    // Fewer shards than workers: samples are split inside the shards instead.
    let dir2 = tempfile::tempdir().unwrap();
    make_shards(dir2.path(), 7, 100);
    let one = open(&dir2.path().to_string_lossy());
    let mut got = ids(&StreamLoader::new(one, cfg(false), Device::Cpu).unwrap(), 0);
    got.sort();
    assert_eq!(got, (0..7).collect::<Vec<_>>());
}

#[test]
fn repeated_augmentation_keeps_the_epoch_length() {
    let dir = tempfile::tempdir().unwrap();
    make_shards(dir.path(), 12, 3);
    let c = StreamConfig {
        repeats: 3,
        batch_size: 3,
        workers: 1,
        shuffle_buffer: 1,
        ..cfg(true)
    };
    let l = StreamLoader::new(open(&dir.path().to_string_lossy()), c, Device::Cpu).unwrap();
    let got = ids(&l, 0);
    assert_eq!(got.len(), 12, "timm: an epoch is still N samples");
    // Copies come together: each batch of 3 is one sample thrice.
    for chunk in got.chunks(3) {
        assert!(chunk.iter().all(|&i| i == chunk[0]), "{got:?}");
    }
}

/// A shard with: a good sample, a corrupt JPEG, a sample without label, a good sample, and
/// then a truncated member.
fn bad_shard(path: &Path) {
    let mut w = TarWriter::new(Vec::new());
    let png = encode(&image(1), image::ImageFormat::Png, 0).unwrap();
    w.append("good1.png", &png).unwrap();
    w.append("good1.cls", b"1").unwrap();
    w.append("broken.jpg", b"\xff\xd8\xff\xe0 definitely not a jpeg")
        .unwrap();
    w.append("broken.cls", b"2").unwrap();
    w.append("nolabel.png", &png).unwrap();
    w.append("good2.png", &png).unwrap();
    w.append("good2.cls", b"0").unwrap();
    w.append("cut.png", &png).unwrap();
    let mut bytes = w.finish().unwrap();
    bytes.truncate(bytes.len() - 1024 - 200);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_samples_are_skipped_and_counted_or_strict_errors_name_shard_and_key() {
    let dir = tempfile::tempdir().unwrap();
    bad_shard(&dir.path().join("bad-train-0.tar"));
    let ds = Arc::new(
        StreamDataset::from_shards(
            &dir.path().join("bad-train-0.tar").to_string_lossy(),
            "train",
            &HubOptions::default(),
        )
        .unwrap(),
    );
    let c = StreamConfig {
        batch_size: 1,
        workers: 1,
        ..cfg(false)
    };
    let loader = StreamLoader::new(ds.clone(), c.clone(), Device::Cpu).unwrap();
    let mut epoch = loader.epoch(0);
    let n = epoch.by_ref().inspect(|b| assert!(b.is_ok())).count();
    assert_eq!(n, 2, "the two good samples");
    assert_eq!(epoch.skipped(), 3, "{:?}", epoch.bad_examples());
    let msgs = epoch.bad_examples().join("\n");
    assert!(
        msgs.contains("bad-train-0.tar, sample broken: image decode failed"),
        "{msgs}"
    );
    assert!(msgs.contains("sample nolabel: no .cls label"), "{msgs}");
    assert!(msgs.contains("broken tar member"), "{msgs}");

    let strict = StreamLoader::new(ds, StreamConfig { strict: true, ..c }, Device::Cpu).unwrap();
    let err = strict
        .epoch(0)
        .find_map(|b| b.err())
        .expect("strict mode fails");
    let text = err.to_string();
    assert!(
        text.starts_with("shard bad-train-0.tar, sample broken:"),
        "{text}"
    );
}

#[test]
fn hub_dataset_resolves_offline_from_a_hub_cache_layout() {
    // The layout hf-hub (and huggingface_hub) use:
    // <cache>/datasets--<owner>--<name>/{refs/main, snapshots/<commit>/<files>}.
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("datasets--acme--tiny-wds");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(commit);
    make_shards(&snap, 6, 3);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let opts = HubOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        offline: true,
    };
    let ds = StreamDataset::from_shards("hf://datasets/acme/tiny-wds", "train", &opts).unwrap();
    assert_eq!(ds.num_samples, 6, "counts from the cached _info.json");
    let mut got = ids(
        &StreamLoader::new(Arc::new(ds), cfg(false), Device::Cpu).unwrap(),
        0,
    );
    got.sort();
    assert_eq!(got, (0..6).collect::<Vec<_>>());
    // Without _info.json the shards are listed from the snapshot folder.
    std::fs::remove_file(snap.join("_info.json")).unwrap();
    let ds = StreamDataset::from_shards("hf://datasets/acme/tiny-wds", "train", &opts).unwrap();
    assert_eq!(ds.num_samples, 6);
    // A revision that is not cached is an error naming the repo.
    let e = StreamDataset::from_shards("hf://datasets/acme/tiny-wds@v2", "train", &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("acme/tiny-wds") && e.contains("the hub cache has no revision `v2`"),
        "{e}"
    );
    // A cached _info.json that does not parse is an error naming it, not a silent guess.
    std::fs::write(snap.join("_info.json"), b"{ broken").unwrap();
    let e = StreamDataset::from_shards("hf://datasets/acme/tiny-wds", "train", &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("acme/tiny-wds file `_info.json`") && e.contains("not a dataset info"),
        "{e}"
    );
}

#[test]
fn image_folder_streams_every_file_with_sorted_class_labels() {
    let dir = tempfile::tempdir().unwrap();
    for (i, class) in ["zebra", "ant", "ant", "moth", "zebra", "ant"]
        .iter()
        .enumerate()
    {
        let d = dir.path().join("train").join(class);
        std::fs::create_dir_all(&d).unwrap();
        let png = encode(&image(i), image::ImageFormat::Png, 0).unwrap();
        std::fs::write(d.join(format!("img{i}.png")), png).unwrap();
    }
    std::fs::write(dir.path().join("train/ant/notes.txt"), b"ignored").unwrap();
    let ds = StreamDataset::from_folder(dir.path(), "train").unwrap();
    assert_eq!(ds.classes, vec!["ant", "moth", "zebra"]);
    assert_eq!(ds.num_samples, 6);
    let loader = StreamLoader::new(Arc::new(ds), cfg(false), Device::Cpu).unwrap();
    let mut pairs = Vec::new();
    for b in loader.epoch(0) {
        let b = b.unwrap();
        let labels = b.labels.to_vec1::<u32>().unwrap();
        let v = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (k, l) in labels.iter().enumerate() {
            pairs.push(((v[k * 3 * 64] * 255.0 / 5.0).round() as usize, *l));
        }
    }
    pairs.sort();
    // img i keeps the label of its folder: ant = 0, moth = 1, zebra = 2.
    assert_eq!(pairs, vec![(0, 2), (1, 0), (2, 0), (3, 1), (4, 2), (5, 0)]);
    // A split the folder lacks is an error, not an empty test set scored 0%.
    let e = StreamDataset::from_folder(dir.path(), "validation").unwrap_err();
    assert!(
        e.to_string().contains("no images for split `validation`"),
        "{e}"
    );
}

#[test]
fn a_broken_info_json_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    make_shards(dir.path(), 4, 2);
    let info = dir.path().join("_info.json");
    for bad in [
        &b"{ not json"[..],
        br#"{"splits": {"train": {"num_samples": "many"}}}"#,
    ] {
        std::fs::write(&info, bad).unwrap();
        for spec in [
            dir.path().to_string_lossy().into_owned(),
            format!("{}/t-train-{{000000..000001}}.tar", dir.path().display()),
        ] {
            let e = StreamDataset::from_shards(&spec, "train", &HubOptions::default()).unwrap_err();
            assert!(
                matches!(&e, DataError::Format { path, msg }
                    if *path == info && msg.contains("not a dataset info")),
                "{spec}: {e}"
            );
        }
    }
    // The converter refuses to merge a new split into it (the file is left as it was).
    let mut w = ShardWriter::new(dir.path(), "t", "validation", 2, ShardImageFormat::Png).unwrap();
    w.write("v0", &image(0), 0).unwrap();
    assert!(matches!(w.finish(vec![]), Err(DataError::Format { .. })));
    assert_eq!(
        std::fs::read(&info).unwrap(),
        br#"{"splits": {"train": {"num_samples": "many"}}}"#
    );
}
