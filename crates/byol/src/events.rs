//! TensorBoard event files, so that `tensorboard --logdir runs/` (and W&B's TensorBoard import)
//! shows every run's curves.
//!
//! The format is TensorFlow's record file (`tensorflow/core/lib/io/record_writer.cc`): each
//! record is its length (u64, little-endian), the masked CRC-32C of those 8 bytes, the data, and
//! the masked CRC-32C of the data. The data is an `Event` protocol buffer
//! (`tensorflow/core/util/event.proto`): wall time, step, and a `Summary` of scalar values, or
//! the file version (first record) or a `SessionLog`. Only the fields written here are declared
//! below, with their field numbers in those files; `prost` encodes them.
//!
//! Events are kept in memory and appended to the file at [`EventWriter::flush`], which the
//! training loop calls just before each checkpoint: every step up to the checkpoint is on disk
//! when it exists. A run resumed from a checkpoint first cuts the run's event files after its
//! step, then writes a new file: the curves continue with no step missing or written twice.

use crate::{Error, Result};
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5, 7")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
    #[prost(message, tag = "7")]
    SessionLog(SessionLog),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    /// A member of the `value` oneof in `summary.proto`: as such it is written even when 0.0
    /// (a plain proto3 float field is not, and TensorBoard then ignores the value).
    #[prost(oneof = "Value", tags = "2")]
    value: Option<Value>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Value {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionLog {
    /// `SessionLog.SessionStatus`: 1 = START.
    #[prost(int32, tag = "1")]
    status: i32,
}

/// The CRC of a record, as TensorFlow masks it.
fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One record of a record file.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Appends scalar events to one event file of a run directory.
pub struct EventWriter {
    path: PathBuf,
    pending: Vec<u8>,
}

impl EventWriter {
    /// A new event file in `dir` (`events.out.tfevents.<seconds>.<nanoseconds>.byol.<pid>`: by
    /// name, the files of a run sort in the order they were written), its first records the file
    /// version and, when the run continues from `start_step` > 0, a `SessionLog` START at step
    /// `start_step + 1`. The event files already in `dir` are first cut before their first event
    /// later than `start_step` (steps a crash left beyond the checkpoint resumed from); the START
    /// record tells TensorBoard the same, for copies of the files made before.
    pub fn create(dir: &Path, start_step: u64) -> Result<Self> {
        trim_after(dir, start_step)?;
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "events.out.tfevents.{:010}.{:09}.byol.{}",
            t.as_secs(),
            t.subsec_nanos(),
            std::process::id()
        );
        let path = dir.join(name);
        let mut w = EventWriter {
            path,
            pending: Vec::new(),
        };
        w.push(Event {
            wall_time: now(),
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        });
        if start_step > 0 {
            w.push(Event {
                wall_time: now(),
                step: start_step as i64 + 1,
                what: Some(What::SessionLog(SessionLog { status: 1 })),
            });
        }
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn push(&mut self, e: Event) {
        self.pending.extend(record(&e.encode_to_vec()));
    }

    /// Scalars at `step`, one event (kept in memory until [`Self::flush`]).
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) {
        let value = values
            .iter()
            .map(|(tag, v)| SummaryValue {
                tag: (*tag).to_string(),
                value: Some(Value::SimpleValue(*v as f32)),
            })
            .collect();
        self.push(Event {
            wall_time: now(),
            step: step as i64,
            what: Some(What::Summary(Summary { value })),
        });
    }

    /// Append the events kept so far to the file and sync it.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        f.write_all(&self.pending)
            .map_err(|e| Error::io(&self.path, e))?;
        f.sync_data().map_err(|e| Error::io(&self.path, e))?;
        self.pending.clear();
        Ok(())
    }
}

/// A scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarEvent {
    pub step: u64,
    pub tag: String,
    pub value: f32,
}

/// A record of an event file: its offset, and the range of its data.
type Frame = (usize, std::ops::Range<usize>);

/// The whole records at the start of `bytes` whose two CRCs check: (offset, data range) each,
/// where they end, and why they end before `bytes` does when it is a CRC mismatch (a record cut
/// short at the end, from a crash while appending, just ends them).
fn frames(bytes: &[u8]) -> (Vec<Frame>, usize, Option<String>) {
    let (mut out, mut at) = (Vec::new(), 0usize);
    while at + 12 <= bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        if u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"))
            != masked_crc(len_bytes)
        {
            return (
                out,
                at,
                Some(format!("record at byte {at}: length CRC mismatch")),
            );
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let Some(end) = len.checked_add(at + 16).filter(|&e| e <= bytes.len()) else {
            break;
        };
        if u32::from_le_bytes(bytes[end - 4..end].try_into().expect("4 bytes"))
            != masked_crc(&bytes[at + 12..end - 4])
        {
            return (
                out,
                at,
                Some(format!("record at byte {at}: data CRC mismatch")),
            );
        }
        out.push((at, at + 12..end - 4));
        at = end;
    }
    (out, at, None)
}

/// The events of an event file with their byte offsets; a CRC mismatch or an undecodable record
/// is an error naming the file and the offset.
fn records(path: &Path, bytes: &[u8]) -> Result<Vec<(usize, Event)>> {
    let (frames, _, damage) = frames(bytes);
    if let Some(d) = damage {
        return Err(Error::data(path, d));
    }
    frames
        .into_iter()
        .map(|(at, r)| {
            Event::decode(&bytes[r])
                .map(|e| (at, e))
                .map_err(|e| Error::data(path, format!("record at byte {at}: {e}")))
        })
        .collect()
}

/// Read an event file: the scalars in file order, and the steps of `SessionLog` START records.
pub fn read_scalars(path: &Path) -> Result<(Vec<ScalarEvent>, Vec<u64>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (mut scalars, mut starts) = (Vec::new(), Vec::new());
    for (_, e) in records(path, &bytes)? {
        match e.what {
            Some(What::Summary(s)) => {
                scalars.extend(s.value.into_iter().filter_map(|v| match v.value {
                    Some(Value::SimpleValue(x)) => Some(ScalarEvent {
                        step: e.step as u64,
                        tag: v.tag,
                        value: x,
                    }),
                    None => None,
                }));
            }
            Some(What::SessionLog(l)) if l.status == 1 => starts.push(e.step as u64),
            _ => {}
        }
    }
    Ok((scalars, starts))
}

/// The event files of a run directory, in the order TensorBoard reads them (by name).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events.out.tfevents."))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Cut every event file of `dir` before its first event later than `step` (or a damaged or
/// cut-short tail), so that a run resumed at `step` writes no step twice.
fn trim_after(dir: &Path, step: u64) -> Result<()> {
    for path in event_files(dir)? {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let (frames, end, damage) = frames(&bytes);
        if let Some(d) = damage {
            tracing::warn!("{}: {d}; the file is cut there", path.display());
        }
        let keep = frames
            .into_iter()
            .find(|(_, r)| {
                Event::decode(&bytes[r.clone()])
                    .map_or(true, |e| e.step > 0 && e.step as u64 > step)
            })
            .map_or(end, |(at, _)| at);
        if keep < bytes.len() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            f.set_len(keep as u64).map_err(|e| Error::io(&path, e))?;
            f.sync_all().map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TensorFlow's masked CRC of known inputs: the CRC-32C check value of "123456789" is
    /// 0xE3069283 (RFC 3720, appendix B.4), masked as TensorFlow's `crc32c::Mask` does.
    #[test]
    fn crc_is_tensorflows_masked_crc32c() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let c: u32 = 0xE306_9283;
        assert_eq!(
            masked_crc(b"123456789"),
            c.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn scalars_round_trip_and_a_flipped_byte_is_caught() {
        let dir = std::env::temp_dir().join(format!("byol-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = EventWriter::create(&dir, 7).unwrap();
        w.scalars(8, &[("train/loss", 1.5), ("train/lr", 0.25)]);
        w.scalars(9, &[("train/loss", 1.25)]);
        w.flush().unwrap();
        let (s, starts) = read_scalars(w.path()).unwrap();
        assert_eq!(starts, [8]);
        let got: Vec<(u64, &str, f32)> = s
            .iter()
            .map(|e| (e.step, e.tag.as_str(), e.value))
            .collect();
        assert_eq!(
            got,
            [
                (8, "train/loss", 1.5),
                (8, "train/lr", 0.25),
                (9, "train/loss", 1.25)
            ]
        );
        let mut bytes = std::fs::read(w.path()).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        std::fs::write(w.path(), &bytes).unwrap();
        let e = read_scalars(w.path()).unwrap_err().to_string();
        assert!(e.contains("data CRC mismatch"), "{e}");
        // A record cut short ends the file without an error.
        std::fs::write(w.path(), &bytes[..n - 3]).unwrap();
        assert_eq!(read_scalars(w.path()).unwrap().0.len(), 2);
    }

    /// A run resumed at step 3 cuts the earlier file after step 3 (steps 4 and 5 were written
    /// after the checkpoint it resumes from) and starts its own file with a START at step 4.
    #[test]
    fn a_resumed_writer_cuts_the_steps_after_its_checkpoint() {
        let dir = std::env::temp_dir().join(format!("byol-events-trim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = EventWriter::create(&dir, 0).unwrap();
        for step in 1..=5 {
            w.scalars(step, &[("train/loss", step as f64)]);
        }
        w.flush().unwrap();
        // And half a record, as a crash while appending leaves it.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(w.path())
            .unwrap();
        f.write_all(&record(b"cut")[..9]).unwrap();
        let first = w.path().to_path_buf();
        let mut w2 = EventWriter::create(&dir, 3).unwrap();
        w2.scalars(4, &[("train/loss", 40.0)]);
        w2.flush().unwrap();
        assert_eq!(
            event_files(&dir).unwrap(),
            [first.clone(), w2.path().to_path_buf()]
        );
        let steps = |p: &Path| {
            read_scalars(p)
                .unwrap()
                .0
                .iter()
                .map(|e| e.step)
                .collect::<Vec<_>>()
        };
        assert_eq!(steps(&first), [1, 2, 3]);
        assert_eq!(steps(w2.path()), [4]);
        assert_eq!(read_scalars(w2.path()).unwrap().1, [4]);
    }
}
