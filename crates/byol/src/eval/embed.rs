//! Representations of a whole image set, written in a format Python reads without this project:
//! a safetensors file with `features` (\[N, D\] f32) and `labels` (\[N\] i64), and in its header a
//! JSON `index` (one entry per row: the image's name, label and class) and the class list.
//! `safetensors.numpy.load_file(f)` gives the arrays; `safe_open(f, "np").metadata()` the index.

use crate::eval::Features;
use crate::rng::{Stream, rng};
use crate::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// One embedded image: where it came from and which split it belongs to.
pub struct Row {
    pub name: String,
    pub split: &'static str,
}

/// An entry of the header's `index`: row i's image.
#[derive(serde::Serialize)]
struct IndexEntry<'a> {
    name: &'a str,
    split: &'static str,
    label: usize,
    class: &'a str,
}

/// Write `features` (row i describes `rows[i]`; labels index `classes`) to `path`.
pub fn write_embeddings(
    path: &Path,
    rows: &[Row],
    classes: &[String],
    features: &Features,
) -> Result<()> {
    let n = features.len();
    assert_eq!(rows.len(), n, "one row per feature vector");
    let fbytes: Vec<u8> = features
        .values
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let lbytes: Vec<u8> = features
        .labels
        .iter()
        .flat_map(|&l| (l as i64).to_le_bytes())
        .collect();
    let index: Vec<IndexEntry> = (0..n)
        .map(|i| {
            let label = features.labels[i];
            IndexEntry {
                name: &rows[i].name,
                split: rows[i].split,
                label,
                class: &classes[label],
            }
        })
        .collect();
    let meta: HashMap<String, String> = [
        ("format".to_string(), "byol-embeddings".to_string()),
        (
            "index".to_string(),
            serde_json::to_string(&index).expect("json"),
        ),
        (
            "classes".to_string(),
            serde_json::to_string(classes).expect("json"),
        ),
    ]
    .into();
    let views = vec![
        (
            "features".to_string(),
            TensorView::new(Dtype::F32, vec![n, features.dim], &fbytes).expect("view"),
        ),
        (
            "labels".to_string(),
            TensorView::new(Dtype::I64, vec![n], &lbytes).expect("view"),
        ),
    ];
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::data(path, e.to_string()))?;
    crate::io::write_atomic(path, &bytes)
}

/// A 2-D t-SNE map of the rows of `values` ([N, D] row-major): each row L2-normalised first (the
/// cosine geometry the kNN evaluation uses), then Barnes–Hut t-SNE (van der Maaten 2014, θ = 0.5,
/// the `bhtsne` crate) with `perplexity`, 1000 iterations, from a start drawn from `seed`
/// (N(0, 10⁻⁴) per coordinate, as van der Maaten's code).
pub fn tsne_2d(values: &[f32], dim: usize, perplexity: f32, seed: u64) -> Result<Vec<[f32; 2]>> {
    let n = values.len() / dim.max(1);
    if perplexity.is_nan() || perplexity <= 0.0 {
        return Err(Error::config(
            "perplexity",
            format!("{perplexity} must be a positive number"),
        ));
    }
    if (n as f32) < 3.0 * perplexity + 2.0 {
        return Err(Error::config(
            "plot points",
            format!(
                "{n} points are too few for t-SNE at perplexity {perplexity}: it needs at least 3·perplexity + 2 = {:.0}; plot more points or lower the perplexity",
                3.0 * perplexity + 2.0
            ),
        ));
    }
    let rows: Vec<Vec<f32>> = values
        .chunks(dim)
        .map(|r| {
            let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            r.iter().map(|v| v / norm).collect()
        })
        .collect();
    let mut r = rng(seed, Stream::TsneStart, &[]);
    let start: Vec<f32> = (0..2 * n)
        .map(|_| crate::rng::normal(&mut r, 1e-2) as f32)
        .collect();
    let mut tsne: bhtsne::tSNE<f32, Vec<f32>> = bhtsne::tSNE::new(&rows);
    tsne.perplexity(perplexity)
        .epochs(1000)
        .initial_embedding(start)
        .barnes_hut(0.5, |a, b| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt()
        });
    Ok(tsne.embedding().chunks(2).map(|c| [c[0], c[1]]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Too few points for the perplexity is said as such (it was reported as a bad perplexity);
    /// a perplexity that is not positive is the perplexity's error.
    #[test]
    fn too_few_points_and_a_bad_perplexity_are_told_apart() {
        let e = tsne_2d(&[0.5; 5 * 4], 4, 30.0, 0).unwrap_err().to_string();
        assert!(
            e.contains("plot points") && e.contains("5 points are too few") && e.contains("92"),
            "{e}"
        );
        let e = tsne_2d(&[0.5; 5 * 4], 4, 0.0, 0).unwrap_err().to_string();
        assert!(e.contains("`perplexity`") && e.contains("positive"), "{e}");
    }
}
