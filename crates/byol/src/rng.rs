//! Explicit, splittable randomness. Every random draw in the pipeline comes from a generator
//! seeded by a tuple such as (seed, purpose, epoch, index), so a run is reproducible and a
//! resumed run continues exactly the same sequence without storing generator state.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The uses of randomness, each a stream of its own: a key is (seed, use, indices…), the indices
/// being those the use names (an epoch, an image, a step). The first seven are the base purposes;
/// the others are uses that were once numbered slots inside a base purpose (an offset on the
/// first index, or a fixed first index) and keep those slots' keys ([`Stream::slot`]), so every
/// earlier run, figure and test keeps its bits. Two pairs share their keys because their slots
/// had the same numbers: [`Stream::DistillOrder`] and [`Stream::SegmentOrder`],
/// [`Stream::DistillPick`] and [`Stream::DepthOrder`]; each pair's two uses belong to different
/// commands and never meet in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The order of pre-training's images in an epoch: [epoch]; shards' orders: [epoch, …].
    Shuffle,
    /// Pre-training's two views of an image: [epoch, image] (and tests' random inputs).
    Augment,
    /// The built-in synthetic images: [split, image].
    Synthetic,
    /// A class-balanced subset or held-out split: [size].
    Split,
    /// A layer's initial values, from its network's key: [hash of the parameter's path].
    Init,
    /// The tiles of one dense-transfer mosaic, from its split's key: [mosaic].
    Mosaic,
    /// The synthetic depth scenes (`transfer::depth`).
    Scene,
    /// The online network's initialisation (also the random-init baseline's): no index.
    OnlineInit,
    /// The target network's own initialisation (`target.init = "independent"`): no index.
    TargetInit,
    /// MoCo's initial queue of keys: no index.
    MocoQueue,
    /// The t-SNE map's starting points (`byol embed`): no index.
    TsneStart,
    /// Fine-tuning's classifier: no index.
    FinetuneHead,
    /// The distillation student's initialisation: no index.
    DistillStudent,
    /// The segmentation head's layers: [layer].
    SegmentHead,
    /// The depth decoder's layers: [layer].
    DepthDecoder,
    /// The training split's mosaics (each then [`Stream::Mosaic`]): no index.
    MosaicTrain,
    /// The validation split's mosaics: no index.
    MosaicVal,
    /// The linear evaluation's order of images: [epoch].
    LinearOrder,
    /// Fine-tuning's order of images: [epoch].
    FinetuneOrder,
    /// Fine-tuning's training views: [epoch, image].
    FinetuneViews,
    /// Distillation's order of unlabelled images: [epoch].
    DistillOrder,
    /// Distillation's views of its unlabelled images: [epoch, image].
    DistillViews,
    /// Distillation's pick of labelled images at a step: [step].
    DistillPick,
    /// Distillation's views of the labelled images it picked: [step, image].
    DistillPickViews,
    /// Segmentation fine-tuning's order of images: [epoch].
    SegmentOrder,
    /// Segmentation fine-tuning's training crops: [epoch, image].
    SegmentCrops,
    /// Depth fine-tuning's order of scenes: [epoch].
    DepthOrder,
    /// Depth fine-tuning's training views: [epoch, scene].
    DepthViews,
}

/// Where a [`Stream`]'s keys come from: its base purpose, a fixed first index (`prefix`) and an
/// offset added to the first of the caller's indices.
struct Slot {
    purpose: u64,
    prefix: Option<u64>,
    offset: u64,
}

impl Stream {
    /// The slot of each use: the base purposes are 1…7; the named uses keep the numbered slots
    /// they once were.
    fn slot(self) -> Slot {
        use Stream::*;
        let (purpose, prefix, offset) = match self {
            Shuffle => (1, None, 0),
            Augment => (2, None, 0),
            Synthetic => (3, None, 0),
            Split => (4, None, 0),
            Init => (5, None, 0),
            Mosaic => (6, None, 0),
            Scene => (7, None, 0),
            OnlineInit => (5, Some(0), 0),
            TargetInit => (5, Some(1), 0),
            MocoQueue => (5, Some(2), 0),
            TsneStart => (5, Some(3), 0),
            FinetuneHead => (5, Some(7), 0),
            DistillStudent => (5, Some(8), 0),
            SegmentHead => (5, Some(11), 0),
            DepthDecoder => (5, Some(13), 0),
            MosaicTrain => (6, Some(0), 0),
            MosaicVal => (6, Some(1), 0),
            LinearOrder => (1, None, 1_000_000),
            FinetuneOrder => (1, None, 2_000_000),
            DistillOrder | SegmentOrder => (1, None, 4_000_000),
            DistillPick | DepthOrder => (1, None, 6_000_000),
            FinetuneViews => (2, None, 3_000_000),
            DistillViews | SegmentCrops => (2, None, 5_000_000),
            DistillPickViews | DepthViews => (2, None, 7_000_000),
        };
        Slot {
            purpose,
            prefix,
            offset,
        }
    }
}

/// SplitMix64 finaliser: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit key derived from the seed, the use and its indices.
pub fn key(seed: u64, stream: Stream, indices: &[u64]) -> u64 {
    let Slot {
        purpose,
        prefix,
        offset,
    } = stream.slot();
    let mut h = mix(seed ^ mix(purpose));
    for p in prefix.into_iter().chain(
        indices
            .iter()
            .enumerate()
            .map(|(i, &p)| if i == 0 { p.wrapping_add(offset) } else { p }),
    ) {
        h = mix(h ^ p);
    }
    h
}

/// A 64-bit key of a string (FNV-1a), to index streams by name.
pub fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A generator for (seed, use, indices…).
pub fn rng(seed: u64, stream: Stream, parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(key(seed, stream, parts))
}

/// A draw from N(0, std²) by Box–Muller (its cosine half): the one Gaussian sampler of the
/// project (the convolutions' He initialisation, MoCo's initial queue, t-SNE's start).
pub fn normal(r: &mut impl rand::Rng, std: f64) -> f64 {
    let (u1, u2): (f64, f64) = (r.random_range(f64::MIN_POSITIVE..1.0), r.random());
    std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn same_key_same_stream_and_different_indices_differ() {
        let a: u64 = rng(7, Stream::Augment, &[1, 2]).random();
        let b: u64 = rng(7, Stream::Augment, &[1, 2]).random();
        let c: u64 = rng(7, Stream::Augment, &[1, 3]).random();
        let d: u64 = rng(7, Stream::Shuffle, &[1, 2]).random();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    /// The key of a numbered slot, the formula before the names, written out here.
    fn slot(seed: u64, purpose: u64, parts: &[u64]) -> u64 {
        parts
            .iter()
            .fold(mix(seed ^ mix(purpose)), |h, &p| mix(h ^ p))
    }

    const SEED: u64 = 7;
    const E: u64 = 3;
    const I: u64 = 11;

    /// The named uses of one draw per run give the keys of the numbered slots they replaced, so
    /// runs keep their bits.
    #[test]
    fn named_initialisations_keep_their_slots_keys() {
        let seed = SEED;
        for (stream, parts, want) in [
            (Stream::OnlineInit, vec![], slot(seed, 5, &[0])),
            (Stream::TargetInit, vec![], slot(seed, 5, &[1])),
            (Stream::MocoQueue, vec![], slot(seed, 5, &[2])),
            (Stream::TsneStart, vec![], slot(seed, 5, &[3])),
            (Stream::FinetuneHead, vec![], slot(seed, 5, &[7])),
            (Stream::DistillStudent, vec![], slot(seed, 5, &[8])),
            (Stream::SegmentHead, vec![I], slot(seed, 5, &[11, I])),
            (Stream::DepthDecoder, vec![I], slot(seed, 5, &[13, I])),
            (Stream::MosaicTrain, vec![], slot(seed, 6, &[0])),
            (Stream::MosaicVal, vec![], slot(seed, 6, &[1])),
        ] {
            assert_eq!(key(seed, stream, &parts), want, "{stream:?}");
        }
    }

    /// The named uses drawn per epoch (orders) and per epoch and image (views) give the keys of
    /// the numbered slots they replaced.
    #[test]
    fn named_orders_and_views_keep_their_slots_keys() {
        let (seed, e, i) = (SEED, E, I);
        for (stream, parts, want) in [
            (
                Stream::LinearOrder,
                vec![e],
                slot(seed, 1, &[1_000_000 + e]),
            ),
            (
                Stream::FinetuneOrder,
                vec![e],
                slot(seed, 1, &[2_000_000 + e]),
            ),
            (
                Stream::DistillOrder,
                vec![e],
                slot(seed, 1, &[4_000_000 + e]),
            ),
            (
                Stream::SegmentOrder,
                vec![e],
                slot(seed, 1, &[4_000_000 + e]),
            ),
            (
                Stream::DistillPick,
                vec![e],
                slot(seed, 1, &[6_000_000 + e]),
            ),
            (Stream::DepthOrder, vec![e], slot(seed, 1, &[6_000_000 + e])),
            (
                Stream::FinetuneViews,
                vec![e, i],
                slot(seed, 2, &[3_000_000 + e, i]),
            ),
            (
                Stream::DistillViews,
                vec![e, i],
                slot(seed, 2, &[5_000_000 + e, i]),
            ),
            (
                Stream::SegmentCrops,
                vec![e, i],
                slot(seed, 2, &[5_000_000 + e, i]),
            ),
            (
                Stream::DistillPickViews,
                vec![e, i],
                slot(seed, 2, &[7_000_000 + e, i]),
            ),
            (
                Stream::DepthViews,
                vec![e, i],
                slot(seed, 2, &[7_000_000 + e, i]),
            ),
            (Stream::Augment, vec![e, i], slot(seed, 2, &[e, i])),
            (Stream::Shuffle, vec![e], slot(seed, 1, &[e])),
        ] {
            assert_eq!(key(seed, stream, &parts), want, "{stream:?}");
        }
    }

    /// No two uses share a key but the two documented pairs.
    #[test]
    fn named_uses_are_distinct_but_the_documented_pairs() {
        let shared = [
            (Stream::DistillOrder, Stream::SegmentOrder),
            (Stream::DistillPick, Stream::DepthOrder),
        ];
        let uses = [
            Stream::OnlineInit,
            Stream::TargetInit,
            Stream::MocoQueue,
            Stream::TsneStart,
            Stream::FinetuneHead,
            Stream::DistillStudent,
            Stream::MosaicTrain,
            Stream::MosaicVal,
            Stream::LinearOrder,
            Stream::FinetuneOrder,
            Stream::DistillOrder,
            Stream::SegmentOrder,
            Stream::DistillPick,
            Stream::DepthOrder,
            Stream::Shuffle,
        ];
        for (a, x) in uses.iter().enumerate() {
            for y in &uses[a + 1..] {
                let same = key(SEED, *x, &[E]) == key(SEED, *y, &[E]);
                assert_eq!(same, shared.contains(&(*x, *y)), "{x:?} and {y:?}");
            }
        }
    }
}
