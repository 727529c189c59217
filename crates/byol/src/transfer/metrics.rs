//! Scores of dense predictions: a confusion matrix, mean IoU and pixel accuracy for semantic
//! segmentation (pixels labelled [`IGNORE`] left out, as in VOC's evaluation); δ < 1.25ᵏ, rms and
//! rel for depth over the pixels with a valid (positive) ground truth (Eigen et al. 2014, the
//! measures of the paper's Table 4).

use super::IGNORE;
use serde::Serialize;

/// Counts of (true class, predicted class) over the scored pixels; a prediction outside the
/// classes has a column of its own (wrong for its pixel, no class's gain).
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    pub classes: usize,
    /// Row-major [true, predicted], `classes + 1` columns (the last: outside the classes).
    pub counts: Vec<u64>,
}

impl Confusion {
    pub fn new(classes: usize) -> Self {
        Confusion {
            classes,
            counts: vec![0; classes * (classes + 1)],
        }
    }

    /// Add one image's predictions against its labels (same length); pixels labelled
    /// [`IGNORE`] (or any label outside the classes) are not scored.
    pub fn add(&mut self, predicted: &[u8], truth: &[u8]) {
        assert_eq!(
            predicted.len(),
            truth.len(),
            "prediction and labels of one image differ in size"
        );
        let cols = self.classes + 1;
        for (&p, &t) in predicted.iter().zip(truth) {
            if t == IGNORE || t as usize >= self.classes {
                continue;
            }
            self.counts[t as usize * cols + (p as usize).min(self.classes)] += 1;
        }
    }

    /// Mean IoU over the classes present in the labels or the predictions, pixel accuracy, and
    /// each class's IoU (`None` for a class absent from both).
    pub fn scores(&self) -> SegScores {
        let (c, cols) = (self.classes, self.classes + 1);
        let at = |t: usize, p: usize| self.counts[t * cols + p] as f64;
        let per_class: Vec<Option<f64>> = (0..c)
            .map(|k| {
                let tp = at(k, k);
                let row: f64 = (0..cols).map(|p| at(k, p)).sum();
                let col: f64 = (0..c).map(|t| at(t, k)).sum();
                let union = row + col - tp;
                (union > 0.0).then(|| tp / union)
            })
            .collect();
        let present: Vec<f64> = per_class.iter().flatten().copied().collect();
        let total: f64 = self.counts.iter().sum::<u64>() as f64;
        let correct: f64 = (0..c).map(|k| at(k, k)).sum();
        SegScores {
            miou: if present.is_empty() {
                0.0
            } else {
                present.iter().sum::<f64>() / present.len() as f64
            },
            pixel_accuracy: if total > 0.0 { correct / total } else { 0.0 },
            per_class_iou: per_class,
            pixels: total as u64,
        }
    }
}

/// Segmentation scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegScores {
    pub miou: f64,
    pub pixel_accuracy: f64,
    pub per_class_iou: Vec<Option<f64>>,
    /// Pixels scored (those not labelled [`IGNORE`]).
    pub pixels: u64,
}

/// Depth scores over the valid pixels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DepthScores {
    /// Fraction of pixels with max(d/d*, d*/d) < 1.25, 1.25², 1.25³.
    pub delta1: f64,
    pub delta2: f64,
    pub delta3: f64,
    /// √mean((d − d*)²), in the depth's unit.
    pub rms: f64,
    /// mean(|d − d*| / d*).
    pub rel: f64,
    pub pixels: u64,
}

/// Scores of predicted depths against the truth; pixels whose true depth is not positive (no
/// measurement) are left out, and predictions are clamped to a small positive depth first.
pub fn depth_scores(predicted: &[f32], truth: &[f32]) -> DepthScores {
    assert_eq!(
        predicted.len(),
        truth.len(),
        "prediction and ground truth differ in size"
    );
    let (mut n, mut d1, mut d2, mut d3, mut sq, mut rel) = (0u64, 0u64, 0u64, 0u64, 0f64, 0f64);
    for (&p, &t) in predicted.iter().zip(truth) {
        if t.is_nan() || t <= 0.0 {
            continue;
        }
        let (p, t) = (f64::from(p.max(1e-3)), f64::from(t));
        let ratio = (p / t).max(t / p);
        n += 1;
        d1 += u64::from(ratio < 1.25);
        d2 += u64::from(ratio < 1.25 * 1.25);
        d3 += u64::from(ratio < 1.25 * 1.25 * 1.25);
        sq += (p - t) * (p - t);
        rel += (p - t).abs() / t;
    }
    let f = |k: u64| if n > 0 { k as f64 / n as f64 } else { 0.0 };
    DepthScores {
        delta1: f(d1),
        delta2: f(d2),
        delta3: f(d3),
        rms: if n > 0 { (sq / n as f64).sqrt() } else { 0.0 },
        rel: if n > 0 { rel / n as f64 } else { 0.0 },
        pixels: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three classes, eight pixels, one ignored: worked by hand.
    /// truth     0 0 1 1 2 2 255 1
    /// predicted 0 1 1 1 2 0  2  2
    /// class 0: tp 1, row 2, col 2 → IoU 1/3; class 1: tp 2, row 3, col 3 → 2/4;
    /// class 2: tp 1, row 2, col 2 → 1/3. mIoU = (1/3 + 1/2 + 1/3)/3 = 7/18; accuracy 4/7.
    #[test]
    fn miou_and_pixel_accuracy_by_hand() {
        let mut c = Confusion::new(3);
        c.add(&[0, 1, 1, 1, 2, 0, 2, 2], &[0, 0, 1, 1, 2, 2, IGNORE, 1]);
        let s = c.scores();
        assert_eq!(s.pixels, 7);
        assert!((s.miou - 7.0 / 18.0).abs() < 1e-12, "{s:?}");
        assert!((s.pixel_accuracy - 4.0 / 7.0).abs() < 1e-12, "{s:?}");
        assert_eq!(s.per_class_iou.len(), 3);
        assert!((s.per_class_iou[1].unwrap() - 0.5).abs() < 1e-12);
        // The ignored pixel's prediction changes nothing.
        let mut d = Confusion::new(3);
        d.add(&[0, 1, 1, 1, 2, 0, 0, 2], &[0, 0, 1, 1, 2, 2, IGNORE, 1]);
        assert_eq!(d, c);
        // A class absent from labels and predictions does not count in the mean.
        let mut e = Confusion::new(4);
        e.add(&[0, 1, 1, 1, 2, 0, 2, 2], &[0, 0, 1, 1, 2, 2, IGNORE, 1]);
        assert_eq!(e.scores().per_class_iou[3], None);
        assert!((e.scores().miou - 7.0 / 18.0).abs() < 1e-12);
        // A prediction outside the classes is wrong for its pixel and no class's gain: class 0
        // has tp 1, row 2, col 1 → IoU 1/2; class 1 tp 1, row 1, col 1 → 1.
        let mut f = Confusion::new(2);
        f.add(&[0, 9, 1], &[0, 0, 1]);
        let s = f.scores();
        assert!(
            (s.miou - 0.75).abs() < 1e-12 && (s.pixel_accuracy - 2.0 / 3.0).abs() < 1e-12,
            "{s:?}"
        );
    }

    /// truth 1 2 4 0(invalid); predicted 1.2 1.5 4 9 → ratios 1.2, 1.333, 1: δ1 2/3, δ2 3/3;
    /// rms √((0.04 + 0.25 + 0)/3); rel (0.2 + 0.25 + 0)/3.
    #[test]
    fn depth_scores_by_hand() {
        let s = depth_scores(&[1.2, 1.5, 4.0, 9.0], &[1.0, 2.0, 4.0, 0.0]);
        assert_eq!(s.pixels, 3);
        assert!(
            (s.delta1 - 2.0 / 3.0).abs() < 1e-12 && s.delta2 == 1.0 && s.delta3 == 1.0,
            "{s:?}"
        );
        assert!((s.rms - (0.29f64 / 3.0).sqrt()).abs() < 1e-6, "{s:?}");
        assert!((s.rel - 0.45 / 3.0).abs() < 1e-6, "{s:?}");
    }

    /// One pixel in each band of the thresholds, so that δ1, δ2 and δ3 differ: ratios 1.1
    /// (< 1.25), 1.5 (< 1.5625), 1.9 (< 1.953125) and 3 (above all), the last two as
    /// under-predictions: δ1 1/4, δ2 2/4, δ3 3/4.
    #[test]
    fn each_delta_threshold_is_its_own() {
        let s = depth_scores(&[1.1, 3.0, 1.0, 1.0], &[1.0, 2.0, 1.9, 3.0]);
        assert_eq!(
            (s.delta1, s.delta2, s.delta3, s.pixels),
            (0.25, 0.5, 0.75, 4),
            "{s:?}"
        );
    }
}
