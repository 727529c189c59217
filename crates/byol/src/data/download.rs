//! Verified downloads of dataset archives. The archive goes into a temporary file in the
//! destination folder, is checked against the checksum its authors publish, is unpacked into a
//! temporary folder there, and only then is its content renamed into place: an interrupted,
//! truncated or tampered download never leaves a half dataset that a later run would trust.

use crate::{Error, Result};
use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A dataset archive: where to fetch it and the MD5 its authors publish for it.
#[derive(Debug, Clone, Copy)]
pub struct Archive {
    pub url: &'static str,
    pub md5: &'static str,
}

fn download_error(url: &str, message: String) -> Error {
    Error::Download {
        url: url.to_string(),
        message,
    }
}

/// The hex MD5 of everything `reader` yields, copied into `out`; progress (bytes, MB/s) is
/// logged about every 5 % of `total` (or every 16 MB when the size is unknown).
fn copy_hashing(
    url: &str,
    mut reader: impl Read,
    out: &mut impl Write,
    total: Option<u64>,
) -> Result<String> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let (started, mut done, mut next_report) = (Instant::now(), 0u64, 0u64);
    let step = total.map_or(16 << 20, |t| (t / 20).max(1));
    loop {
        let n = reader.read(&mut buf).map_err(|e| {
            download_error(
                url,
                format!("reading the response failed after {done} bytes: {e}"),
            )
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| download_error(url, format!("writing the archive failed: {e}")))?;
        done += n as u64;
        if done >= next_report {
            let rate = done as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-3);
            match total {
                Some(t) => tracing::info!(
                    "downloaded {:.1} of {:.1} MB ({rate:.1} MB/s)",
                    done as f64 / 1e6,
                    t as f64 / 1e6
                ),
                None => tracing::info!("downloaded {:.1} MB ({rate:.1} MB/s)", done as f64 / 1e6),
            }
            next_report = done + step;
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// MD5 of a file, hex.
fn md5_of(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    copy_hashing(&path.display().to_string(), f, &mut std::io::sink(), None)
}

/// Fetch `archive` into a temporary file in `dest` (bounded connection and read timeouts),
/// hashing it as it arrives, check that MD5 and unpack as [`install`] does.
pub fn fetch(archive: Archive, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    let part = dest.join(format!(".download-{}.part", std::process::id()));
    tracing::info!("downloading {} into {}", archive.url, dest.display());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .build()
        .into();
    let resp = agent.get(archive.url).call().map_err(|e| {
        download_error(archive.url, format!("{e} (is this machine offline? download the archive elsewhere and unpack it into {})", dest.display()))
    })?;
    let total = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let result = (|| {
        let mut out = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
        let got = copy_hashing(archive.url, resp.into_body().into_reader(), &mut out, total)?;
        out.sync_all().map_err(|e| Error::io(&part, e))?;
        check(&part, &got, archive)?;
        unpack_into(&part, archive, dest)
    })();
    let _ = std::fs::remove_file(&part);
    result
}

/// Check the archive file `tar_gz` against `archive.md5`, then [`unpack_into`] `dest`. A wrong
/// checksum or a broken archive is an error that leaves `dest` as it was.
pub fn install(tar_gz: &Path, archive: Archive, dest: &Path) -> Result<()> {
    check(tar_gz, &md5_of(tar_gz)?, archive)?;
    unpack_into(tar_gz, archive, dest)
}

/// An error unless `got`, the MD5 of `tar_gz`, is the published one.
fn check(tar_gz: &Path, got: &str, archive: Archive) -> Result<()> {
    if got == archive.md5 {
        return Ok(());
    }
    Err(download_error(
        archive.url,
        format!(
            "{} has MD5 {got}, not the published {}: a corrupt or tampered download; nothing was unpacked",
            tar_gz.display(),
            archive.md5
        ),
    ))
}

/// Unpack `tar_gz` into a temporary folder in `dest`, then rename each top-level entry into
/// `dest`; on any error the temporary folder is removed and `dest` keeps what it had.
fn unpack_into(tar_gz: &Path, archive: Archive, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    let staging: PathBuf = dest.join(format!(".unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = (|| {
        let f = std::fs::File::open(tar_gz).map_err(|e| Error::io(tar_gz, e))?;
        tar::Archive::new(flate2::read::GzDecoder::new(f))
            .unpack(&staging)
            .map_err(|e| {
                download_error(
                    archive.url,
                    format!("unpacking {} failed: {e}", tar_gz.display()),
                )
            })?;
        for entry in std::fs::read_dir(&staging).map_err(|e| Error::io(&staging, e))? {
            let entry = entry.map_err(|e| Error::io(&staging, e))?;
            let target = dest.join(entry.file_name());
            if target.exists() {
                return Err(Error::data(
                    &target,
                    "already exists: remove it to install the download there",
                ));
            }
            std::fs::rename(entry.path(), &target).map_err(|e| Error::io(&target, e))?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A .tar.gz holding `dir/file.bin` (3073 bytes of `fill`), and its MD5.
    fn archive_file(path: &Path, fill: u8) -> String {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        let data = vec![fill; 3073];
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "dir/file.bin", &data[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        md5_of(path).unwrap()
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("byol-download-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_modified_archive_is_rejected_and_leaves_no_dataset_folder() {
        let dir = tmp("modified");
        let file = dir.join("a.tar.gz");
        let md5: &'static str = Box::leak(archive_file(&file, 7).into_boxed_str());
        let archive = Archive {
            url: "https://example.invalid/a.tar.gz",
            md5,
        };
        let dest = dir.join("data");
        // A well-formed archive with other content (a tampered mirror: only the checksum tells).
        archive_file(&file, 8);
        let e = install(&file, archive, &dest).unwrap_err().to_string();
        assert!(e.contains("MD5") && e.contains("tampered"), "{e}");
        assert!(
            !dest.join("dir").exists(),
            "a dataset folder was left behind"
        );
        // One byte changed in the middle of the original archive.
        archive_file(&file, 7);
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let e = install(&file, archive, &dest).unwrap_err().to_string();
        assert!(e.contains("MD5"), "{e}");
        assert!(
            std::fs::read_dir(&dest).map_or(true, |mut d| d.next().is_none()),
            "something was left in {}",
            dest.display()
        );
    }

    #[test]
    fn a_verified_archive_is_unpacked_into_place() {
        let dir = tmp("good");
        let file = dir.join("a.tar.gz");
        let md5: &'static str = Box::leak(archive_file(&file, 7).into_boxed_str());
        let dest = dir.join("data");
        install(
            &file,
            Archive {
                url: "https://example.invalid/a.tar.gz",
                md5,
            },
            &dest,
        )
        .unwrap();
        assert_eq!(
            std::fs::read(dest.join("dir/file.bin")).unwrap().len(),
            3073
        );
        let names: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["dir".to_string()],
            "the staging folder was left behind"
        );
        // Installing again does not overwrite what is there.
        let e = install(
            &file,
            Archive {
                url: "https://example.invalid/a.tar.gz",
                md5,
            },
            &dest,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("already exists"), "{e}");
    }

    #[test]
    fn md5_of_a_known_input() {
        let dir = tmp("md5");
        let p = dir.join("abc");
        std::fs::write(&p, b"abc").unwrap();
        // RFC 1321, appendix A.5.
        assert_eq!(md5_of(&p).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
