//! Transfer to dense tasks (the paper's Table 4): what semantic segmentation and depth
//! estimation read and how they are scored. The paper fine-tunes on PASCAL VOC 2012 (FCN, mIoU)
//! and NYU v2 (δ thresholds, rms, rel); neither can be downloaded where `byol` is tested, so a
//! built-in benchmark on real images stands in for segmentation: mosaics of CIFAR-10 images,
//! each pixel labelled with its tile's class, written and read in the VOC layout.
//!
//! The metrics ([`metrics`]), the mosaic generator ([`mosaic`]), the VOC layout ([`voc`]), the
//! FCN fine-tuning of [`segment`] and the up-projection decoder of [`depth`] with its data ([`scenes`]).

pub mod depth;
pub mod metrics;
pub mod mosaic;
pub mod scenes;
pub mod segment;
pub mod tune;
pub mod voc;

/// The label of pixels that count in neither the loss nor the metrics (VOC's object borders).
pub const IGNORE: u8 = 255;

/// `[transfer]`: the settings of the dense transfer tasks.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TransferConfig {
    #[serde(default)]
    pub segment: segment::SegmentConfig,
    #[serde(default)]
    pub depth: depth::DepthConfig,
}
