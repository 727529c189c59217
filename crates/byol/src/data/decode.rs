//! Decoding an encoded image (JPEG or PNG, from a file or from bytes held in memory) to 8-bit
//! RGB, with the header checked against `data.max-image-pixels` first. Both readers use it: the
//! ImageFolder ([`super::imagefolder`]) and the shards ([`super::shards`]).

use crate::image::Rgb8;
use crate::{Error, Result};
use std::path::Path;

/// Decode a file to 8-bit RGB (grayscale, 16-bit, CMYK, palette and alpha images are converted).
pub fn decode(path: &Path) -> Result<Rgb8> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(&bytes, path)
}

/// Decode an encoded image held in memory (`origin` names it in errors). Never panics on any
/// input: the property test below feeds it mutated and truncated files.
pub fn decode_bytes(bytes: &[u8], origin: &Path) -> Result<Rgb8> {
    if bytes.is_empty() {
        return Err(Error::data(origin, "empty file"));
    }
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(origin, e))?
        .decode()
        .map_err(|e| Error::data(origin, e.to_string()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::data(origin, "image has no pixels"));
    }
    Ok(Rgb8 {
        width: w as usize,
        height: h as usize,
        data: img.into_raw(),
    })
}

/// Width and height from the file's header, without decoding the pixels.
pub fn dimensions(path: &Path) -> Result<(u32, u32)> {
    image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .into_dimensions()
        .map_err(|e| Error::data(path, e.to_string()))
}

/// The width and height a file's header announces, refused when they are more than
/// `max_pixels` pixels (read before decoding it).
pub fn check_file_pixels(path: &Path, max_pixels: u64) -> Result<(u32, u32)> {
    let (w, h) = dimensions(path)?;
    check_pixels(w, h, max_pixels, path)?;
    Ok((w, h))
}

/// Refuse the dimensions `w`×`h` a header announces when they exceed `max_pixels` or are empty
/// (`origin` names the image in the error).
pub fn check_pixels(w: u32, h: u32, max_pixels: u64, origin: &Path) -> Result<()> {
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(Error::data(
            origin,
            format!("{w}×{h} pixels is more than data.max-image-pixels = {max_pixels}"),
        ));
    }
    if w == 0 || h == 0 {
        return Err(Error::data(origin, "image has no pixels"));
    }
    Ok(())
}

/// Decode a shard member's bytes, refusing an image whose header announces more than `max_pixels`.
pub fn decode_member(bytes: &[u8], origin: &str, max_pixels: u64) -> Result<Rgb8> {
    let origin = Path::new(origin);
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(origin, e))?
        .into_dimensions()
        .map_err(|e| Error::data(origin, e.to_string()))?;
    check_pixels(w, h, max_pixels, origin)?;
    decode_bytes(bytes, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Property test of the decoding path: valid PNG and JPEG files with random bytes changed,
    /// inserted, or cut off never make it panic; it returns an image or an error.
    #[test]
    fn decoding_mutated_files_never_panics() {
        use crate::rng::{Stream, rng};
        use rand::Rng;
        let mut seeds = Vec::new();
        let img = image::RgbImage::from_fn(13, 9, |x, y| {
            image::Rgb([(x * 19) as u8, (y * 27) as u8, ((x + y) * 7) as u8])
        });
        for fmt in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
            let mut buf = std::io::Cursor::new(Vec::new());
            img.write_to(&mut buf, fmt).unwrap();
            seeds.push(buf.into_inner());
        }
        seeds.push(include_bytes!("../../tests/fixtures/cmyk.jpg").to_vec());
        let origin = Path::new("fuzz");
        let mut r = rng(0, Stream::Synthetic, &[42]);
        let (mut ok, mut err) = (0, 0);
        for i in 0..3000 {
            let mut b = seeds[i % seeds.len()].clone();
            match r.random_range(0..4) {
                0 => {
                    for _ in 0..r.random_range(1..8) {
                        let k = r.random_range(0..b.len());
                        b[k] = r.random();
                    }
                }
                1 => b.truncate(r.random_range(0..b.len())),
                2 => {
                    let k = r.random_range(0..b.len());
                    let junk: Vec<u8> = (0..r.random_range(1..64)).map(|_| r.random()).collect();
                    b.splice(k..k, junk);
                }
                _ => b = (0..r.random_range(0..256)).map(|_| r.random()).collect(),
            }
            match decode_bytes(&b, origin) {
                Ok(img) => {
                    assert_eq!(img.data.len(), img.width * img.height * 3);
                    ok += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains("fuzz"), "errors name the file: {e}");
                    err += 1;
                }
            }
        }
        assert!(ok > 100 && err > 100, "ok {ok}, err {err}");
    }
}
