//! The CIFAR-10/100 binary format (Krizhevsky 2009): records of label byte(s) followed by
//! 3072 bytes of pixels (1024 R, 1024 G, 1024 B, row-major 32×32). CIFAR-10 has
//! `data_batch_{1..5}.bin` and `test_batch.bin` with one label byte; CIFAR-100 has `train.bin`
//! and `test.bin` with a coarse and a fine label byte (the fine label is used).
//!
//! With `download`, the archive is fetched from its canonical location, checked against the
//! MD5 the dataset's page publishes and unpacked into the data folder first
//! ([`super::download`]). Without network access this fails after a bounded wait with a clear
//! error.

use super::download::{self, Archive};
use super::{ImageSet, Pixels, Splits};
use crate::image::Rgb8;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The archives and the MD5 sums listed on https://www.cs.toronto.edu/~kriz/cifar.html.
const CIFAR10: Archive = Archive {
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5: "c32a1d4ab5d03f1284b67883e8d87530",
};
const CIFAR100: Archive = Archive {
    url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    md5: "03b5dce01913d631647c71ecec9e9cb8",
};
const CIFAR10_DIR: &str = "cifar-10-batches-bin";
const CIFAR100_DIR: &str = "cifar-100-binary";

const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parse one binary file. `label_bytes` is 1 (CIFAR-10) or 2 (CIFAR-100; the second is used).
pub fn parse(bytes: &[u8], label_bytes: usize, path: &Path) -> Result<(Vec<Pixels>, Vec<usize>)> {
    let rec = label_bytes + 3072;
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
        return Err(Error::data(
            path,
            format!(
                "size {} is not a multiple of the {rec}-byte record",
                bytes.len()
            ),
        ));
    }
    let mut images = Vec::with_capacity(bytes.len() / rec);
    let mut labels = Vec::with_capacity(bytes.len() / rec);
    for r in bytes.chunks_exact(rec) {
        labels.push(r[label_bytes - 1] as usize);
        let px = &r[label_bytes..];
        let mut data = vec![0u8; 3072];
        for i in 0..1024 {
            for c in 0..3 {
                data[i * 3 + c] = px[c * 1024 + i];
            }
        }
        images.push(Pixels::Memory(Rgb8 {
            width: 32,
            height: 32,
            data,
        }));
    }
    Ok((images, labels))
}

fn read_files(
    dir: &Path,
    names: &[&str],
    label_bytes: usize,
    classes: &[String],
) -> Result<ImageSet> {
    let mut set = ImageSet::empty(classes.to_vec());
    for name in names {
        let p = dir.join(name);
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        let (imgs, labels) = parse(&bytes, label_bytes, &p)?;
        if let Some(&bad) = labels.iter().find(|&&l| l >= classes.len()) {
            return Err(Error::data(&p, format!("label {bad} out of range")));
        }
        set.names
            .extend((0..imgs.len()).map(|i| format!("{}#{i}", p.display())));
        set.images.extend(imgs);
        set.labels.extend(labels);
    }
    Ok(set)
}

fn read_lines(p: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(p)
        .map_err(|e| Error::io(p, e))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Load CIFAR-10 or CIFAR-100 from `root` (which holds the unpacked folder, or is it).
pub fn load(root: &Path, hundred: bool, download: bool) -> Result<Splits> {
    let (sub, archive) = if hundred {
        (CIFAR100_DIR, CIFAR100)
    } else {
        (CIFAR10_DIR, CIFAR10)
    };
    let dir: PathBuf = if root.ends_with(sub) {
        root.to_path_buf()
    } else {
        root.join(sub)
    };
    let probe = dir.join(if hundred {
        "test.bin"
    } else {
        "test_batch.bin"
    });
    if !probe.exists() {
        if !download {
            return Err(Error::data(
                &dir,
                format!(
                    "CIFAR binary files not found (looked for {}); set data.download = true (or pass --download) to fetch {}",
                    probe.display(),
                    archive.url
                ),
            ));
        }
        download::fetch(archive, root)?;
    }
    if hundred {
        let classes = read_lines(&dir.join("fine_label_names.txt"))
            .unwrap_or_else(|_| (0..100).map(|i| format!("class{i}")).collect());
        Ok(Splits {
            train: read_files(&dir, &["train.bin"], 2, &classes)?,
            test: read_files(&dir, &["test.bin"], 2, &classes)?,
        })
    } else {
        let classes: Vec<String> = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
        let train_names = [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
        ];
        Ok(Splits {
            train: read_files(&dir, &train_names, 1, &classes)?,
            test: read_files(&dir, &["test_batch.bin"], 1, &classes)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_planar_to_interleaved() {
        let mut rec = vec![7u8];
        rec.extend((0..3072).map(|i| (i / 1024) as u8 * 100 + (i % 2) as u8));
        let (imgs, labels) = parse(&rec, 1, Path::new("x")).unwrap();
        assert_eq!(labels, vec![7]);
        let Pixels::Memory(m) = &imgs[0] else {
            panic!()
        };
        assert_eq!(&m.data[..6], &[0, 100, 200, 1, 101, 201]);
        assert!(
            parse(&rec[..100], 1, Path::new("short.bin"))
                .unwrap_err()
                .to_string()
                .contains("short.bin")
        );
    }

    #[test]
    fn missing_files_without_download_is_a_clear_error() {
        let e = load(Path::new("/nonexistent/cifar"), false, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("download"), "{e}");
    }
}
