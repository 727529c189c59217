//! Representations of a whole image set, written in a format Python reads without this project:
//! a safetensors file with `features` (\[N, D\] f32) and `labels` (\[N\] i64), and in its header a
//! JSON `index` (one entry per row: the image's name, label and class) and the class list.
//! `safetensors.numpy.load_file(f)` gives the arrays; `safe_open(f, "np").metadata()` the index.

use crate::eval::Features;
use crate::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// One embedded image: where it came from and which split it belongs to.
pub struct Row {
    pub name: String,
    pub split: &'static str,
}

/// Write `features` (row i describes `rows[i]`; labels index `classes`) to `path`.
pub fn write_embeddings(path: &Path, rows: &[Row], classes: &[String], features: &Features) -> Result<()> {
    let n = features.len();
    assert_eq!(rows.len(), n, "one row per feature vector");
    let fbytes: Vec<u8> = features.values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let lbytes: Vec<u8> = features.labels.iter().flat_map(|&l| (l as i64).to_le_bytes()).collect();
    let index: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let l = features.labels[i];
            serde_json::json!({"name": rows[i].name, "split": rows[i].split, "label": l, "class": classes[l]})
        })
        .collect();
    let meta: HashMap<String, String> = [
        ("format".to_string(), "byol-embeddings".to_string()),
        ("index".to_string(), serde_json::to_string(&index).expect("json")),
        ("classes".to_string(), serde_json::to_string(classes).expect("json")),
    ]
    .into();
    let views = vec![
        ("features".to_string(), TensorView::new(Dtype::F32, vec![n, features.dim], &fbytes).expect("view")),
        ("labels".to_string(), TensorView::new(Dtype::I64, vec![n], &lbytes).expect("view")),
    ];
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::data(path, e.to_string()))?;
    crate::io::write_atomic(path, &bytes)
}
