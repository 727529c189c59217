//! Distillation with unlabelled images, SimCLR v2's third step (Chen et al. 2020b, "Big
//! Self-Supervised Models are Strong Semi-Supervised Learners", Section 2, eq. 2): a fine-tuned
//! teacher ([`crate::eval::classifier`]) labels each unlabelled training image with its softmax
//! at temperature T, and a student (the same architecture, or a smaller one) is trained from a
//! random initialisation to minimise −Σ_y P_T(y|x; T) log P_S(y|x; T), optionally plus the
//! cross-entropy on the teacher's labelled subset. The teacher runs in inference mode (its
//! BatchNorm statistics fixed, no gradient); teacher and student see the same view of an image,
//! a random resized crop and flip as in fine-tuning.
//!
//! [`distill`] runs it in a run directory, resumable from its checkpoints.

mod checkpoint;
pub mod config;
mod run;

pub use checkpoint::{CHECKPOINT_KIND, recorded};
pub use config::{DistillConfig, StudentConfig};
pub use run::{DistillOptions, DistillOutcome, DistillResult, Distillation, distill};

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};

/// The teacher's soft labels: softmax(logits / T) over the classes, [B, C] → [B, C].
pub fn soft_labels(teacher_logits: Tensor<2>, temperature: f64) -> Tensor<2> {
    softmax(teacher_logits.div_scalar(temperature), 1)
}

/// The distillation loss, averaged over the batch: −(1/B) Σ_b Σ_y P_T(y|x_b) log P_S(y|x_b; T),
/// with `teacher` the soft labels P_T ([`soft_labels`], no gradient) and P_S the softmax of the
/// student's logits at the same T. Its gradient with respect to the student's logits is
/// (P_S − P_T) / (T·B), zero where the two agree. SimCLR v2 writes it without Hinton's T²
/// factor, as here.
pub fn distillation_loss(
    student_logits: Tensor<2>,
    teacher: Tensor<2>,
    temperature: f64,
) -> Tensor<1> {
    let log_p = log_softmax(student_logits.div_scalar(temperature), 1); // [B, C]
    (teacher * log_p).sum_dim(1).mean().neg() // [1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn logits(v: &[f32], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [2, 3]), device)
    }

    /// The loss on two rows of three logits at T = 2, against the sums worked by hand; its
    /// gradient is (P_S − P_T)/(T·B), and zero (to f32 rounding) where the student's logits equal
    /// the teacher's up to a constant per row.
    #[test]
    fn the_loss_and_its_gradient_match_a_hand_computation() {
        let device = Device::flex().autodiff();
        let (s, t) = (
            [1.0f32, 2.0, 0.0, -1.0, 0.5, 3.0],
            [0.0f32, 1.0, 2.0, 2.0, 0.0, 0.0],
        );
        let temperature = 2.0;
        let softmax_row = |r: &[f32]| -> Vec<f64> {
            let e: Vec<f64> = r
                .iter()
                .map(|&v| (f64::from(v) / temperature).exp())
                .collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|v| v / z).collect()
        };
        let (mut want, mut grad) = (0.0f64, Vec::new());
        for row in 0..2 {
            let (ps, pt) = (
                softmax_row(&s[3 * row..3 * row + 3]),
                softmax_row(&t[3 * row..3 * row + 3]),
            );
            want -= (0..3).map(|y| pt[y] * ps[y].ln()).sum::<f64>() / 2.0;
            grad.extend((0..3).map(|y| (ps[y] - pt[y]) / (temperature * 2.0)));
        }
        let student = logits(&s, &device).require_grad();
        let teacher = soft_labels(logits(&t, &device), temperature);
        let loss = distillation_loss(student.clone(), teacher, temperature);
        let got = f64::from(loss.clone().into_scalar::<f32>());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let g: Vec<f32> = student
            .grad(&loss.backward())
            .unwrap()
            .into_data()
            .try_into_vec()
            .unwrap();
        for (a, b) in g.iter().zip(&grad) {
            assert!((f64::from(*a) - b).abs() < 1e-7, "{g:?} vs {grad:?}");
        }
        assert!(grad.iter().any(|v| v.abs() > 0.01));
        // Agreement: the student's logits are the teacher's plus a constant per row.
        let agreeing: Vec<f32> = t
            .iter()
            .enumerate()
            .map(|(i, v)| v + if i < 3 { 5.0 } else { -2.0 })
            .collect();
        let student = logits(&agreeing, &device).require_grad();
        let loss = distillation_loss(
            student.clone(),
            soft_labels(logits(&t, &device), temperature),
            temperature,
        );
        let g: Vec<f32> = student
            .grad(&loss.backward())
            .unwrap()
            .into_data()
            .try_into_vec()
            .unwrap();
        assert!(g.iter().all(|v| v.abs() < 1e-7), "{g:?}");
    }
}
