//! The vendored zune-jpeg (vendor/zune-jpeg, with masksub's mask-based refinement decoding)
//! must decode progressive JPEGs to exactly the bytes upstream zune-jpeg gives — the `image`
//! crate decodes JPEGs with upstream zune-jpeg 0.5.15, so the two are compared byte for byte.
//! Fixtures: tests/fixtures/progressive, made by tools/data/make_progressive_fixtures.py
//! (libjpeg-turbo progressive scripts with successive-approximation refinement scans; 4:4:4,
//! 4:2:2, 4:2:0, grayscale, restart intervals, odd sizes). With `MASKSUB_EXTRA_JPEGS=<dir>` the
//! test also compares every `.jpg` in that folder (for wider checks by hand).

use std::path::Path;

use masksub_data::decode::decode_rgb;

#[test]
fn progressive_jpegs_decode_exactly_as_upstream_zune_jpeg() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/progressive");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 8, "fixtures in {}", dir.display());
    if let Some(extra) = std::env::var_os("MASKSUB_EXTRA_JPEGS") {
        let before = names.len();
        names.extend(
            std::fs::read_dir(&extra)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "jpg")),
        );
        println!("and {} files from {extra:?}", names.len() - before);
    }
    for p in names {
        let bytes = std::fs::read(&p).unwrap();
        let ours = decode_rgb(&bytes, "jpg").unwrap();
        let upstream = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8();
        assert_eq!(
            (ours.width as u32, ours.height as u32),
            upstream.dimensions(),
            "{}",
            p.display()
        );
        assert!(
            ours.data == upstream.as_raw().as_slice(),
            "{}: pixels differ from upstream zune-jpeg",
            p.display()
        );
    }
}
