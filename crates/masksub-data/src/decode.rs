//! Image bytes -> 8-bit RGB pixels (JPEG through zune-jpeg, PNG, WebP; via the `image` crate).
//!
//! Grayscale, palette and alpha images become RGB like PIL's `convert("RGB")`, which timm
//! applies to every sample. Decoder limits bound memory for hostile headers.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};

/// Largest accepted side, in pixels (far above any ImageNet photo).
const MAX_SIDE: u32 = 16_384;
/// Largest decoder allocation.
const MAX_ALLOC: u64 = 1 << 30;

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A `width x height` image filled with `rgb`.
    pub fn filled(width: usize, height: usize, rgb: [u8; 3]) -> Self {
        let data = rgb
            .iter()
            .copied()
            .cycle()
            .take(width * height * 3)
            .collect();
        RgbImage {
            width,
            height,
            data,
        }
    }

    /// Wraps raw HWC bytes; `None` if the length does not match.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        (data.len() == width * height * 3).then_some(RgbImage {
            width,
            height,
            data,
        })
    }
}

/// Decodes `bytes`; `ext` (`jpg`, `png`, ...) is a hint, the content decides. Errors are text
/// for the bad-sample report.
pub fn decode_rgb(bytes: &[u8], ext: &str) -> Result<RgbImage, String> {
    let mut img = RgbImage::default();
    decode_rgb_into(bytes, ext, &mut img)?;
    Ok(img)
}

/// [`decode_rgb`] into `img`, reusing its buffer for JPEGs: a worker decoding one image after
/// another then allocates (and the OS zeroes) no fresh pages per image.
pub fn decode_rgb_into(bytes: &[u8], ext: &str, img: &mut RgbImage) -> Result<(), String> {
    if bytes.starts_with(&[0xff, 0xd8]) {
        return decode_jpeg(bytes, img);
    }
    *img = decode_other(bytes, ext)?;
    Ok(())
}

/// PNG, WebP and anything else through the `image` crate.
fn decode_other(bytes: &[u8], ext: &str) -> Result<RgbImage, String> {
    let hint = match ext {
        "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
        "png" => Some(ImageFormat::Png),
        "webp" => Some(ImageFormat::WebP),
        _ => None,
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read image: {e}"))?;
    if reader.format().is_none() {
        reader.set_format(hint.ok_or("unknown image format")?);
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("image decode failed: {e}"))?;
    let rgb = img.into_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    if w == 0 || h == 0 {
        return Err("image has no pixels".into());
    }
    Ok(RgbImage {
        width: w,
        height: h,
        data: rgb.into_raw(),
    })
}

/// JPEG straight through zune-jpeg into `img`'s buffer as RGB (no intermediate image or copy).
fn decode_jpeg(bytes: &[u8], img: &mut RgbImage) -> Result<(), String> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    dec.decode_headers()
        .map_err(|e| format!("image decode failed: {e}"))?;
    let (w, h) = dec
        .dimensions()
        .ok_or("image decode failed: no dimensions")?;
    if w == 0 || h == 0 {
        return Err("image has no pixels".into());
    }
    if (w as u64) * (h as u64) * 3 > MAX_ALLOC {
        return Err(format!(
            "image decode failed: {w}x{h} exceeds the size limit"
        ));
    }
    if dec.output_buffer_size() != Some(w * h * 3) {
        return Err("image decode failed: decoder output is not 3-channel RGB".into());
    }
    // Every byte is overwritten by the decoder; only growth past the old length is zeroed.
    img.data.resize(w * h * 3, 0);
    if let Err(e) = dec.decode_into(&mut img.data) {
        *img = RgbImage::default();
        return Err(format!("image decode failed: {e}"));
    }
    (img.width, img.height) = (w, h);
    Ok(())
}

/// Encodes as JPEG (quality 0-100) or PNG, for `masksub data convert`.
pub fn encode(img: &RgbImage, format: ImageFormat, quality: u8) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let (w, h) = (img.width as u32, img.height as u32);
    match format {
        ImageFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            image::ImageEncoder::write_image(enc, &img.data, w, h, image::ExtendedColorType::Rgb8)
        }
        _ => {
            let enc = image::codecs::png::PngEncoder::new(&mut out);
            image::ImageEncoder::write_image(enc, &img.data, w, h, image::ExtendedColorType::Rgb8)
        }
    }
    .map_err(|e| format!("encode failed: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_exactly_and_garbage_is_an_error() {
        let img = RgbImage::from_raw(3, 2, (0..18).map(|i| i * 13).collect()).unwrap();
        let png = encode(&img, ImageFormat::Png, 0).unwrap();
        assert_eq!(decode_rgb(&png, "png").unwrap(), img);
        assert!(decode_rgb(&png[..png.len() / 2], "png").is_err());
        assert!(decode_rgb(b"not an image", "jpg").is_err());
    }

    #[test]
    fn jpeg_round_trip_is_close() {
        let img = RgbImage::filled(16, 16, [200, 100, 50]);
        let jpg = encode(&img, ImageFormat::Jpeg, 95).unwrap();
        let back = decode_rgb(&jpg, "jpg").unwrap();
        assert_eq!((back.width, back.height), (16, 16));
        let max = back
            .data
            .iter()
            .zip(&img.data)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(max <= 3, "max diff {max}");
    }
}
