//! Files written so that a crash or a full disk never leaves a half-written one in place.

use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name `path` is written under before the rename.
pub(crate) fn temporary(path: &Path) -> std::path::PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint")))
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

/// The regular file that writing `path` means: `path` itself (new or a regular file), or the
/// target of the link it is, followed up to 40 links deep.
fn destination(path: &Path, depth: usize) -> Result<PathBuf> {
    let not_a_file = |what: &str| {
        Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}, not a regular file: give the path of a file to write")))
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path.to_path_buf()),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.file_type().is_symlink() => {
            if depth >= 40 {
                return Err(not_a_file("a loop of symbolic links"));
            }
            let target = std::fs::read_link(path).map_err(|e| Error::io(path, e))?;
            let target = if target.is_relative() { path.parent().unwrap_or(Path::new(".")).join(target) } else { target };
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
        assert!(std::fs::symlink_metadata(d.join("link")).unwrap().file_type().is_symlink());
        for special in [Path::new("/dev/null"), d.as_path()] {
            let e = write_atomic(special, b"x").unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
