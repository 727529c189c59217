//! How our tensors sit in PyTorch's state dicts, shared by the two export layouts (torchvision's
//! ResNets in [`super::export`], timm's ViTs in [`super::timm`]): the names of a
//! normalisation's scale and shift, a Linear weight's orientation, and the values read back.

use crate::{Error, Result};
use burn::tensor::Tensor;

/// A tensor to write: its key in the file, shape, values.
pub type Exported = (String, Vec<usize>, Vec<f32>);

/// A normalisation's scale and shift under PyTorch's names: our `….gamma`, `….beta` →
/// `….weight`, `….bias`; other paths as they are.
pub(super) fn norm_to_pytorch(path: &str) -> String {
    if let Some(stem) = path.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = path.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        path.to_string()
    }
}

/// The inverse of [`norm_to_pytorch`] for the modules whose name starts with `norm_prefix`
/// (`bn` in a ResNet, `norm` in a ViT): their `weight`, `bias` are our `gamma`, `beta`.
pub(super) fn norm_from_pytorch(key: &str, norm_prefix: &str) -> String {
    let is_norm = key
        .rsplit('.')
        .nth(1)
        .is_some_and(|m| m.starts_with(norm_prefix));
    match (is_norm, key.rsplit_once('.')) {
        (true, Some((stem, "weight"))) => format!("{stem}.gamma"),
        (true, Some((stem, "bias"))) => format!("{stem}.beta"),
        _ => key.to_string(),
    }
}

/// A tensor (`flat`, of `shape`) in the other framework's layout: a Linear weight (a rank-2
/// `….weight`) is [in, out] in burn and [out, in] in PyTorch, so it is transposed (which goes
/// either way); any other tensor is as it is.
pub(super) fn swap_linear_layout(
    path: &str,
    flat: Tensor<1>,
    shape: Vec<usize>,
) -> (Tensor<1>, Vec<usize>) {
    match shape.as_slice() {
        &[i, o] if path.ends_with(".weight") => (
            flat.reshape([i, o]).transpose().reshape([i * o]),
            vec![o, i],
        ),
        _ => (flat, shape),
    }
}

/// The values of `flat`, read back.
pub(super) fn f32s(flat: Tensor<1>) -> Result<Vec<f32>> {
    flat.into_data()
        .convert::<f32>()
        .try_into_vec()
        .map_err(|e| Error::readback("an exported tensor", e))
}
