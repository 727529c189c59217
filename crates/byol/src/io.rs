//! Files written so that a crash or a full disk never leaves a half-written one in place, and
//! the verified tensor files (safetensors with a checksum) that checkpoints and saved networks
//! are.

use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Float tensors by name (shape, row-major values) with string metadata: one safetensors file
/// (readable from Python) whose metadata also holds `format`, `version` and `sha256`, a SHA-256
/// of each tensor's name and little-endian bytes in name order, checked on reading.
#[derive(Debug, Clone, Default)]
pub struct TensorFile {
    pub meta: HashMap<String, String>,
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

/// What a [`TensorFile`] must say it is: `format` and `version` in its metadata; `kind` names
/// it in errors ("byol checkpoint").
#[derive(Debug, Clone, Copy)]
pub struct FileKind<'a> {
    pub format: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
}

impl FileKind<'_> {
    /// Check the format and version strings of a file's metadata.
    pub fn check(&self, path: &Path, format: Option<&str>, version: Option<&str>) -> Result<()> {
        if format != Some(self.format) {
            return Err(Error::checkpoint(path, format!("not a {}", self.kind)));
        }
        if version != Some(self.version) {
            return Err(Error::checkpoint(
                path,
                format!(
                    "unsupported format version {version:?} (expected {})",
                    self.version
                ),
            ));
        }
        Ok(())
    }
}

fn digest_of(bytes: &BTreeMap<&String, Vec<u8>>) -> String {
    let mut hasher = Sha256::new();
    for (name, b) in bytes {
        hasher.update(name.as_bytes());
        hasher.update(b);
    }
    format!("{:x}", hasher.finalize())
}

impl TensorFile {
    fn bytes(&self) -> BTreeMap<&String, Vec<u8>> {
        self.tensors
            .iter()
            .map(|(n, (_, v))| (n, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect()
    }

    /// The SHA-256 of its tensors (each name, then its little-endian bytes, in name order), as
    /// hexadecimal: equal digests, equal tensors.
    pub fn digest(&self) -> String {
        digest_of(&self.bytes())
    }

    /// The file's bytes, marked as `kind`.
    pub fn to_bytes(&self, kind: FileKind<'_>) -> Result<Vec<u8>> {
        let bytes = self.bytes();
        let mut meta = self.meta.clone();
        meta.insert("format".into(), kind.format.into());
        meta.insert("version".into(), kind.version.into());
        meta.insert("sha256".into(), digest_of(&bytes));
        let views = bytes
            .iter()
            .map(|(n, b)| {
                Ok((
                    (*n).clone(),
                    TensorView::new(Dtype::F32, self.tensors[*n].0.clone(), b)
                        .map_err(|e| Error::checkpoint(n.as_str(), e.to_string()))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::checkpoint("<memory>", e.to_string()))
    }

    /// Write it to `path` atomically ([`write_atomic`]).
    pub fn write(&self, path: &Path, kind: FileKind<'_>) -> Result<()> {
        write_atomic(path, &self.to_bytes(kind)?)
    }

    /// The `format` its metadata names (`byol-checkpoint`, `byol-classifier`, …), without reading
    /// the tensors; `None` for a safetensors file without one.
    pub fn format_of(path: &Path) -> Result<Option<String>> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| {
            Error::checkpoint(path, format!("not a readable safetensors file ({e})"))
        })?;
        Ok(header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("format").cloned()))
    }

    /// Read `path` and verify that it is of `kind` and that its tensors match their checksum.
    pub fn read(path: &Path, kind: FileKind<'_>) -> Result<Self> {
        let err = |m: String| Error::checkpoint(path, m);
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(format!("not a readable {} ({e})", kind.kind)))?;
        let meta = header.metadata().clone().unwrap_or_default();
        kind.check(
            path,
            meta.get("format").map(String::as_str),
            meta.get("version").map(String::as_str),
        )?;
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| err(format!("corrupt tensors ({e})")))?;
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        let mut hasher = Sha256::new();
        let mut tensors = BTreeMap::new();
        for name in names {
            let view = st.tensor(&name).map_err(|e| err(e.to_string()))?;
            if view.dtype() != Dtype::F32 {
                return Err(err(format!("tensor {name} is {:?}, not F32", view.dtype())));
            }
            hasher.update(name.as_bytes());
            hasher.update(view.data());
            let v: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.insert(name, (view.shape().to_vec(), v));
        }
        if meta.get("sha256") != Some(&format!("{:x}", hasher.finalize())) {
            return Err(err("checksum mismatch: the file is corrupted".into()));
        }
        Ok(TensorFile { meta, tensors })
    }

    /// The checksum of its tensors, as recorded (and verified, for a file that was read).
    pub fn sha256(&self) -> &str {
        self.meta.get("sha256").map_or("", String::as_str)
    }
}

/// The temporary name `path` is written under before the rename.
pub(crate) fn temporary(path: &Path) -> std::path::PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name = std::ffi::OsString::from(".");
    name.push(
        path.file_name()
            .unwrap_or(std::ffi::OsStr::new("checkpoint")),
    );
    name.push(".tmp");
    dir.join(name)
}

/// Write atomically: temporary file in the same folder, fsync, rename. On failure (disk full,
/// I/O error) the temporary file is removed and whatever `path` held before is untouched.
///
/// `path` may be a symbolic link: its target is written (the link stays a link). A path that
/// holds something other than a regular file (a device such as `/dev/full`, a folder, a pipe) is
/// refused: a rename would replace it instead of writing to it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let path = &destination(path, 0)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temporary(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Write an RGB image as a PNG file, atomically.
pub fn write_rgb_png(path: &Path, img: &crate::image::Rgb8) -> Result<()> {
    write_png(
        path,
        (img.width, img.height),
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        None,
        &img.data,
    )
}

/// Write `pixels` (rows of big-endian samples) as a PNG of `color` at `depth` bits, with `palette`
/// for an indexed one, through [`write_atomic`]: a full disk or a crash leaves no truncated
/// picture, label map or depth map under the name. Every PNG `byol` writes goes through here.
pub fn write_png(
    path: &Path,
    size: (usize, usize),
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<Vec<u8>>,
    pixels: &[u8],
) -> Result<()> {
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, size.0 as u32, size.1 as u32);
    enc.set_color(color);
    enc.set_depth(depth);
    if let Some(p) = palette {
        enc.set_palette(p);
    }
    let mut w = enc
        .write_header()
        .map_err(|e| Error::data(path, e.to_string()))?;
    w.write_image_data(pixels)
        .map_err(|e| Error::data(path, e.to_string()))?;
    w.finish().map_err(|e| Error::data(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// The regular file that writing `path` means: `path` itself (new or a regular file), or the
/// target of the link it is, followed up to 40 links deep.
fn destination(path: &Path, depth: usize) -> Result<PathBuf> {
    let not_a_file = |what: &str| {
        Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{what}, not a regular file: give the path of a file to write"),
            ),
        )
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path.to_path_buf()),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.file_type().is_symlink() => {
            if depth >= 40 {
                return Err(not_a_file("a loop of symbolic links"));
            }
            let target = std::fs::read_link(path).map_err(|e| Error::io(path, e))?;
            let target = if target.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(target)
            } else {
                target
            };
            destination(&target, depth + 1)
        }
        Ok(m) if m.is_file() => Ok(path.to_path_buf()),
        Ok(m) if m.is_dir() => Err(not_a_file("a folder")),
        Ok(_) => Err(not_a_file("a device, pipe or socket")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file name that is not UTF-8 is written under that very name (and its temporary file
    /// under its own name, not a shared fallback).
    #[test]
    #[cfg(unix)]
    fn a_name_that_is_not_utf8_is_written_as_it_is() {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir().join(format!("byol-io-nonutf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(std::ffi::OsStr::from_bytes(b"e\xff.safetensors"));
        assert_eq!(
            temporary(&path).file_name().unwrap().as_bytes(),
            b".e\xff.safetensors.tmp"
        );
        write_atomic(&path, b"abc").unwrap();
        let names: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        assert_eq!(names, [b"e\xff.safetensors".to_vec()]);
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    #[cfg(unix)]
    use std::os::unix::fs::FileTypeExt;

    /// A symbolic link is written through (its target gets the bytes, the link stays a link);
    /// a device node or a folder is refused and left as it was.
    #[test]
    #[cfg(unix)]
    fn links_are_written_through_and_special_files_refused() {
        let d = std::env::temp_dir().join(format!("byol-io-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("target"), b"old").unwrap();
        std::os::unix::fs::symlink("target", d.join("link")).unwrap();
        write_atomic(&d.join("link"), b"new").unwrap();
        assert_eq!(std::fs::read(d.join("target")).unwrap(), b"new");
        assert!(
            std::fs::symlink_metadata(d.join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        for special in [Path::new("/dev/null"), d.as_path()] {
            let e = write_atomic(special, b"x").unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
