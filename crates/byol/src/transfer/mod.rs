//! Transfer to dense tasks (the paper's Table 4): what semantic segmentation and depth
//! estimation read and how they are scored. The paper fine-tunes on PASCAL VOC 2012 (FCN, mIoU)
//! and NYU v2 (δ thresholds, rms, rel); neither can be downloaded where `byol` is tested, so a
//! built-in benchmark on real images stands in for segmentation: mosaics of CIFAR-10 images,
//! each pixel labelled with its tile's class, written and read in the VOC layout.
//!
//! The metrics ([`metrics`]), the mosaic generator ([`mosaic`]), the VOC layout ([`voc`]), the
//! FCN fine-tuning of [`segment`] and the up-projection decoder of [`depth`] with its data
//! ([`scenes`]); what the two share: their optimisation ([`training`], in the supervised
//! protocols' one loop) and their pictures ([`images`]).

pub mod depth;
pub mod images;
pub mod metrics;
pub mod mosaic;
pub mod scenes;
pub mod segment;
pub mod training;
pub mod voc;

/// A split of a dense task's data; [`Split::name`] names its folder or list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    /// The name of its folder (`train/`, `val/`) or list (`train.txt`, `val.txt`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The label of pixels that count in neither the loss nor the metrics (VOC's object borders).
pub const IGNORE: u8 = 255;

/// The largest side, in pixels, of a training crop, a mosaic or a synthetic scene: twice the
/// paper's 513-pixel crop (VOC's images are about 500 px a side), and far beyond what 2 cores
/// train on. Larger sizes are refused when the config is read, before anything is allocated.
pub const MAX_SIDE: usize = 1024;

/// An error naming `field` when `bytes` of images held in memory (`what`) are more than half the
/// memory the OS says is available (the in-memory cache's rule), before any is made.
pub fn check_memory(field: &str, what: &str, bytes: u128) -> crate::Result<()> {
    let Some(available) = crate::data::available_memory() else {
        return Ok(());
    };
    let limit = u128::from(available / 2);
    if bytes <= limit {
        return Ok(());
    }
    let gb = |b: u128| b as f64 / 1e9;
    Err(crate::Error::config(
        field,
        format!(
            "{what} take about {:.1} GB in memory, over half the {:.1} GB the OS says are available: make fewer or smaller ones",
            gb(bytes),
            gb(u128::from(available))
        ),
    ))
}

/// `[transfer]`: the settings of the dense transfer tasks.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TransferConfig {
    #[serde(default)]
    pub segment: segment::SegmentConfig,
    #[serde(default)]
    pub depth: depth::DepthConfig,
}

/// The samples of a PNG that must be of `color` at `depth` bits (else an error naming the file
/// and saying what a `what` must be, `must`), with its width and height.
fn read_png(
    path: &std::path::Path,
    color: png::ColorType,
    depth: png::BitDepth,
    what: &str,
    must: &str,
) -> crate::Result<(Vec<u8>, usize, usize)> {
    use crate::Error;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| Error::data(path, format!("not a PNG {what}: {e}")))?;
    let info = reader.info();
    if info.color_type != color || info.bit_depth != depth {
        return Err(Error::data(
            path,
            format!(
                "a {what} must be {must}; this one is {:?} at {:?} bits",
                info.color_type, info.bit_depth
            ),
        ));
    }
    let (w, h) = (info.width as usize, info.height as usize);
    let mut buf = vec![
        0u8;
        reader
            .output_buffer_size()
            .ok_or_else(|| Error::data(path, format!("{what} too large")))?
    ];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| Error::data(path, e.to_string()))?;
    buf.truncate(frame.buffer_size());
    Ok((buf, w, h))
}
