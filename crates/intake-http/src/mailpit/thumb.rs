//! `GET /api/v1/message/{ID}/part/{PartID}/thumb`: a 180x120 JPEG of an image attachment,
//! as Mailpit makes it. An image at least 180x120 is scaled to cover the frame and cropped
//! to its centre; a smaller one is scaled down (never up) to fit it; either is laid on a
//! white background (no black behind transparent PNGs or GIFs), JPEG quality 70. A part
//! that is not an image, or that does not decode, gets a blank white thumbnail.
//!
//! Decompression bombs: the dimensions the image declares are read before any pixel; past
//! [`MAX_PIXELS`] the request is refused (400) without decoding, and the decoder itself runs
//! under an allocation limit.

use std::io::Cursor;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, Limits, Rgba, RgbaImage};

use super::message::with_part;
use crate::AppState;
use crate::error::ApiError;

/// The thumbnail's width.
pub const WIDTH: u32 = 180;
/// The thumbnail's height.
pub const HEIGHT: u32 = 120;
/// The largest image decoded, in pixels (width x height), as Mailpit's limit.
pub const MAX_PIXELS: u64 = 20_000_000;
/// What the decoder may allocate in all (20 Mpx of 16-bit RGBA fits).
const MAX_ALLOC: u64 = 192 * 1024 * 1024;
/// Mailpit's JPEG quality.
const QUALITY: u8 = 70;

/// An image declaring more than [`MAX_PIXELS`] pixels: not decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge {
    /// The declared width.
    pub width: u32,
    /// The declared height.
    pub height: u32,
}

/// The JPEG thumbnail of a part of type `content_type` holding `bytes` (decoded).
pub fn thumbnail(content_type: &str, bytes: &[u8]) -> Result<Vec<u8>, TooLarge> {
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("image/")
    {
        return Ok(blank());
    }
    match decode(bytes)? {
        Some(img) => Ok(encode(&framed(img))),
        None => Ok(blank()),
    }
}

/// The image, oriented as its EXIF says; None when it is no image we can read.
fn decode(bytes: &[u8]) -> Result<Option<DynamicImage>, TooLarge> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .ok()
    };
    // The declared size, from the header alone (no pixel is allocated).
    let declared = reader().map(|mut r| {
        r.no_limits();
        r.into_dimensions()
    });
    let Some(Ok((width, height))) = declared else {
        return Ok(None);
    };
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(TooLarge { width, height });
    }
    let Some(mut reader) = reader() else {
        return Ok(None);
    };
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let limited = |e: ImageError| match e {
        ImageError::Limits(_) => Err(TooLarge { width, height }),
        _ => Ok(None),
    };
    let mut decoder = match reader.into_decoder() {
        Ok(d) => d,
        Err(e) => return limited(e),
    };
    let orientation = decoder.orientation().ok();
    let mut img = match DynamicImage::from_decoder(decoder) {
        Ok(img) => img,
        Err(e) => return limited(e),
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(Some(img))
}

/// The image scaled (cover-and-crop when large enough, fit otherwise) and centred on white.
fn framed(img: DynamicImage) -> RgbaImage {
    let (w, h) = (img.width(), img.height());
    let scaled = if w >= WIDTH && h >= HEIGHT {
        img.resize_to_fill(WIDTH, HEIGHT, FilterType::Lanczos3)
    } else if w > WIDTH || h > HEIGHT {
        img.resize(WIDTH, HEIGHT, FilterType::Lanczos3)
    } else {
        img
    };
    let mut canvas = RgbaImage::from_pixel(WIDTH, HEIGHT, Rgba([255, 255, 255, 255]));
    let x = (WIDTH - scaled.width().min(WIDTH)) / 2;
    let y = (HEIGHT - scaled.height().min(HEIGHT)) / 2;
    imageops::overlay(&mut canvas, &scaled.to_rgba8(), x.into(), y.into());
    canvas
}

fn encode(img: &RgbaImage) -> Vec<u8> {
    let rgb = DynamicImage::ImageRgba8(img.clone()).into_rgb8();
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode_image(&rgb)
        .expect("encoding to memory does not fail");
    out
}

/// The white thumbnail of a part that is no image.
fn blank() -> Vec<u8> {
    encode(&RgbaImage::from_pixel(
        WIDTH,
        HEIGHT,
        Rgba([255, 255, 255, 255]),
    ))
}

/// The handler. As Mailpit: 400 for a part that does not exist.
pub(super) async fn thumb(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let made = with_part(&state, &id, &path, |p| {
        let name = p.file_name.clone().or(p.content_id.clone());
        (name, thumbnail(&p.content_type, &p.bytes))
    })
    .await?;
    let Some((name, made)) = made else {
        return Err(ApiError::BadRequest(format!("no part {path}")));
    };
    let jpeg = made.map_err(|t| {
        ApiError::BadRequest(format!(
            "the image is {}x{} pixels, more than the {MAX_PIXELS} a thumbnail is made from",
            t.width, t.height
        ))
    })?;
    let name = name
        .unwrap_or_default()
        .replace(['"', '\\', '\r', '\n'], "_");
    let mut resp = jpeg.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    if let Ok(v) = HeaderValue::from_str(&format!("filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageFormat;

    fn png(img: &RgbaImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn jpeg_pixels(bytes: &[u8]) -> image::RgbImage {
        let img = image::load_from_memory_with_format(bytes, ImageFormat::Jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
        img.into_rgb8()
    }

    fn near(p: &image::Rgb<u8>, want: [u8; 3]) -> bool {
        p.0.iter().zip(want).all(|(a, b)| a.abs_diff(b) < 24)
    }

    #[test]
    fn a_small_image_is_centred_on_white_at_its_own_size() {
        let red = RgbaImage::from_pixel(40, 20, Rgba([255, 0, 0, 255]));
        let t = jpeg_pixels(&thumbnail("image/png", &png(&red)).unwrap());
        assert!(
            near(t.get_pixel(90, 60), [255, 0, 0]),
            "centre is the image"
        );
        assert!(near(t.get_pixel(5, 5), [255, 255, 255]), "corner is white");
        // 40 wide, centred: columns 70..110 are red, 60 and 120 white.
        assert!(near(t.get_pixel(60, 60), [255, 255, 255]));
        assert!(near(t.get_pixel(75, 60), [255, 0, 0]));
        assert!(near(t.get_pixel(120, 60), [255, 255, 255]));
    }

    #[test]
    fn a_large_image_fills_the_frame_cropped_to_its_centre() {
        // 600x200, blue in the middle half, green at both ends: scaled to 360x120 and
        // cropped to the centre 180 columns, which are the blue ones.
        let img = RgbaImage::from_fn(600, 200, |x, _| {
            if (150..450).contains(&x) {
                Rgba([0, 0, 255, 255])
            } else {
                Rgba([0, 255, 0, 255])
            }
        });
        let t = jpeg_pixels(&thumbnail("image/png", &png(&img)).unwrap());
        for (x, y) in [(10, 60), (90, 60), (170, 60), (90, 1), (90, 118)] {
            assert!(near(t.get_pixel(x, y), [0, 0, 255]), "pixel {x},{y}");
        }
    }

    #[test]
    fn transparency_is_white_not_black() {
        let clear = RgbaImage::from_pixel(30, 30, Rgba([0, 0, 0, 0]));
        let t = jpeg_pixels(&thumbnail("image/png", &png(&clear)).unwrap());
        assert!(near(t.get_pixel(90, 60), [255, 255, 255]));
    }

    #[test]
    fn a_part_that_is_no_image_gets_a_blank_thumbnail() {
        for (ctype, bytes) in [
            ("application/pdf", b"%PDF-1.4".as_slice()),
            ("image/png", b"not a png at all".as_slice()),
        ] {
            let t = jpeg_pixels(&thumbnail(ctype, bytes).unwrap());
            assert!(t.pixels().all(|p| near(p, [255, 255, 255])), "{ctype}");
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_decoding() {
        // A valid PNG header declaring 100000x100000 pixels, with no pixel data: decoding it
        // would need 40 GB.
        let mut header = Vec::new();
        header.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        header.extend_from_slice(&13u32.to_be_bytes());
        header.extend_from_slice(&ihdr);
        header.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // A small IDAT (a few compressed rows would follow) and IEND.
        for (kind, data) in [
            (&b"IDAT"[..], &[0x78, 0x9c, 0x03, 0x00][..]),
            (b"IEND", &[]),
        ] {
            let mut chunk = kind.to_vec();
            chunk.extend_from_slice(data);
            header.extend_from_slice(&(data.len() as u32).to_be_bytes());
            header.extend_from_slice(&chunk);
            header.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        assert_eq!(
            thumbnail("image/png", &header),
            Err(TooLarge {
                width: 100_000,
                height: 100_000
            })
        );
    }

    /// The CRC-32 of a PNG chunk (type and data).
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    0xedb8_8320 ^ (crc >> 1)
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
