//! Writing an ImageFolder as shards (`byol shard`).

use super::{MANIFEST, Manifest, ManifestShard};
use crate::data::{ImageSet, Pixels};
use crate::image::Rgb8;
use crate::rng::{Stream, rng};
use crate::{Error, Result};
use rand::seq::SliceRandom;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How [`write_shards`] writes.
#[derive(Debug, Clone)]
pub struct ShardWriteOptions {
    /// Start a new shard once one holds at least this many bytes.
    pub target_bytes: u64,
    /// Resize images whose shorter side is larger than this (keeping the aspect ratio) and store
    /// them as JPEG; `None` stores every file's bytes unchanged.
    pub resize_shorter: Option<u32>,
    /// JPEG quality of resized images.
    pub quality: u8,
    /// Samples are written in an order shuffled with this seed (so that a shard holds many
    /// classes, which the shard-level shuffle of training needs).
    pub seed: u64,
}

/// The smallest shorter side `--resize-shorter` accepts, in pixels.
pub const MIN_SHORTER_SIDE: u32 = 8;

impl ShardWriteOptions {
    /// Refuse settings that cannot be right, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if let Some(s) = self.resize_shorter.filter(|&s| s < MIN_SHORTER_SIDE) {
            return Err(Error::config(
                "resize-shorter",
                format!(
                    "{s} px would keep next to nothing of each image: give at least {MIN_SHORTER_SIDE} px (the shorter side the shards keep, at least the training's data.image-size), or leave it out to keep the images as they are"
                ),
            ));
        }
        Ok(())
    }
}

/// Write `set` (an ImageFolder split, loaded without the cache) as shards `shard-NNNNNN.tar` in
/// `out`, each written to a temporary name and renamed when complete, then `manifest.json`
/// (the same way). Unreadable images are skipped and returned with the reason. `progress` is
/// called with (images done, total).
pub fn write_shards(
    set: &ImageSet,
    out: &Path,
    opts: &ShardWriteOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Manifest, Vec<(String, String)>)> {
    use rayon::prelude::*;
    opts.validate()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    if out.join(MANIFEST).exists() {
        return Err(Error::data(
            out.join(MANIFEST),
            "shards already exist here: choose another output folder",
        ));
    }
    let mut order: Vec<usize> = (0..set.len()).collect();
    order.shuffle(&mut rng(opts.seed, Stream::Shuffle, &[u64::MAX]));
    let mut manifest = Manifest {
        count: 0,
        classes: set.classes.clone(),
        resize_shorter: opts.resize_shorter,
        shards: Vec::new(),
    };
    let mut skipped = Vec::new();
    let mut current: Option<OpenShard> = None;
    let total = order.len();
    let mut done = 0;
    for chunk in order.chunks(256) {
        // (index, the encoded image and its extension, or why it could not be encoded)
        type Encoded = (usize, std::result::Result<(Vec<u8>, &'static str), String>);
        let encoded: Vec<Encoded> = chunk
            .par_iter()
            .map(|&i| (i, encode_for_shard(set, i, opts).map_err(|e| e.to_string())))
            .collect();
        for (i, r) in encoded {
            let (bytes, ext) = match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("skipping unreadable image {}: {e}", set.names[i]);
                    skipped.push((set.names[i].clone(), e));
                    continue;
                }
            };
            if let Some(full) = current.take_if(|o| o.bytes >= opts.target_bytes) {
                manifest.shards.push(full.finish()?);
            }
            let o = match &mut current {
                Some(o) => o,
                None => current.insert(OpenShard::create(out, manifest.shards.len())?),
            };
            let key = format!("{:08}", manifest.count);
            let label = set.labels[i].to_string();
            o.append([
                (format!("{key}.{ext}"), &bytes),
                (format!("{key}.cls"), label.as_bytes()),
                (format!("{key}.path"), set.names[i].as_bytes()),
            ])?;
            manifest.count += 1;
        }
        done += chunk.len();
        progress(done, total);
    }
    if let Some(o) = current.take() {
        manifest.shards.push(o.finish()?);
    }
    if manifest.count == 0 {
        return Err(Error::data(out, "no readable image to write"));
    }
    let json = serde_json::to_string_pretty(&manifest).expect("a manifest is JSON");
    crate::io::write_atomic(&out.join(MANIFEST), json.as_bytes())?;
    Ok((manifest, skipped))
}

/// A shard being written to its temporary name `<name>.part`.
struct OpenShard {
    builder: tar::Builder<std::io::BufWriter<Hashing>>,
    part: PathBuf,
    name: String,
    count: usize,
    /// The bytes of its members so far, headers and padding included.
    bytes: u64,
}

impl OpenShard {
    /// Shard number `index` in `out`.
    fn create(out: &Path, index: usize) -> Result<Self> {
        use sha2::Digest;
        let name = format!("shard-{index:06}.tar");
        let part = out.join(format!("{name}.part"));
        let file = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
        let hashing = Hashing {
            file,
            sha: sha2::Sha256::new(),
            bytes: 0,
        };
        Ok(OpenShard {
            builder: tar::Builder::new(std::io::BufWriter::new(hashing)),
            part,
            name,
            count: 0,
            bytes: 0,
        })
    }

    /// Append one sample's members (name, bytes): regular files, mode 0644, time 0.
    fn append(&mut self, members: [(String, &[u8]); 3]) -> Result<()> {
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            self.builder
                .append_data(&mut h, &name, data)
                .map_err(|e| Error::io(&self.part, e))?;
            self.bytes += 512 + (data.len() as u64).div_ceil(512) * 512;
        }
        self.count += 1;
        Ok(())
    }

    /// Close it, synced, under its final name: its manifest entry.
    fn finish(self) -> Result<ManifestShard> {
        use sha2::Digest;
        let writer = self
            .builder
            .into_inner()
            .map_err(|e| Error::io(&self.part, e))?;
        let hashing = writer
            .into_inner()
            .map_err(|e| Error::io(&self.part, e.into_error()))?;
        hashing
            .file
            .sync_all()
            .map_err(|e| Error::io(&self.part, e))?;
        let sha256 = hashing
            .sha
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let dest = self.part.with_extension("");
        std::fs::rename(&self.part, &dest).map_err(|e| Error::io(&dest, e))?;
        Ok(ManifestShard {
            name: self.name,
            count: self.count,
            bytes: hashing.bytes,
            sha256,
        })
    }
}

/// A shard file being written, hashed and counted as its bytes go out (so that the manifest's
/// SHA-256 and size need no second read of the file).
struct Hashing {
    file: std::fs::File,
    sha: sha2::Sha256,
    bytes: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.file.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// What [`shard_imagefolder`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ShardedSplits {
    pub train: Manifest,
    pub test: Manifest,
    /// Images that could not be read, with the reason (skipped).
    pub skipped: Vec<(String, String)>,
}

/// Write an ImageFolder (`root/train/<class>/…` and `root/test/<class>/…`, or `root/<class>/…`
/// with `holdout_fraction` of each class held out, seeded) as shards in `out/train` and
/// `out/test`, each with its manifest. `progress` gets (split, images done, split total).
pub fn shard_imagefolder(
    root: &Path,
    out: &Path,
    opts: &ShardWriteOptions,
    holdout_fraction: f64,
    max_pixels: u64,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<ShardedSplits> {
    opts.validate()?;
    let cfg = crate::data::DataConfig {
        source: crate::data::Source::Folder {
            path: root.to_path_buf(),
            holdout_fraction,
        },
        image_size: 32,
        cache: false,
        cache_max_mb: None,
        max_train: 0,
        max_test: 0,
        workers: 0,
        prefetch_batches: 1,
        max_image_pixels: max_pixels,
    };
    cfg.validate()?;
    let splits = crate::data::imagefolder::load_splits(root, &cfg, holdout_fraction, opts.seed)?;
    let mut skipped: Vec<(String, String)> = splits
        .train
        .skipped
        .iter()
        .map(|(p, e)| (p.display().to_string(), e.clone()))
        .collect();
    let (train, s1) = write_shards(&splits.train, &out.join("train"), opts, &mut |d, t| {
        progress("train", d, t)
    })?;
    let (test, s2) = write_shards(&splits.test, &out.join("test"), opts, &mut |d, t| {
        progress("test", d, t)
    })?;
    skipped.extend(s1);
    skipped.extend(s2);
    Ok(ShardedSplits {
        train,
        test,
        skipped,
    })
}

/// The bytes stored for image `i`: the file unchanged (checked to decode), or resized and
/// re-encoded as JPEG.
fn encode_for_shard(
    set: &ImageSet,
    i: usize,
    opts: &ShardWriteOptions,
) -> Result<(Vec<u8>, &'static str)> {
    let Pixels::File(path) = &set.images[i] else {
        let img = set.rgb(i)?;
        return Ok((encode_jpeg(&img, opts.quality, &set.names[i])?, "jpg"));
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = crate::data::decode::decode_bytes(&bytes, path)?;
    match opts.resize_shorter {
        Some(s) if img.width.min(img.height) > s as usize => {
            let short = img.width.min(img.height) as f64;
            let (w, h) = (
                (img.width as f64 * s as f64 / short).round() as u32,
                (img.height as f64 * s as f64 / short).round() as u32,
            );
            let buf = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
                .expect("sizes match");
            let small = image::imageops::resize(
                &buf,
                w.max(1),
                h.max(1),
                image::imageops::FilterType::CatmullRom,
            );
            let small = Rgb8 {
                width: small.width() as usize,
                height: small.height() as usize,
                data: small.into_raw(),
            };
            Ok((encode_jpeg(&small, opts.quality, &set.names[i])?, "jpg"))
        }
        _ => {
            let ext = match image::guess_format(&bytes) {
                Ok(image::ImageFormat::Png) => "png",
                _ => "jpg",
            };
            Ok((bytes, ext))
        }
    }
}

fn encode_jpeg(img: &Rgb8, quality: u8, origin: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(
            &img.data,
            img.width as u32,
            img.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::data(origin, format!("cannot encode as JPEG: {e}")))?;
    Ok(out)
}
