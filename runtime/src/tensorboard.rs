//! TensorBoard event file mirroring `metrics.jsonl`: every numeric value of every metrics line
//! becomes one scalar, so `tensorboard --logdir runs/` shows each run folder as a run.
//!
//! Layout: one file, [`EVENTS_FILE`], in the run folder beside `metrics.jsonl`. Tags are the
//! metrics line's own key paths joined with `/` (`eval/held_acc/accuracy`, `timing/tokens_per_s`)
//! under the line's stage (`sft/loss`, `sft/eval/held_acc/accuracy`), or under its event name
//! for a line without a stage (`skipped_rows/count`). TensorBoard groups charts by the tag's first
//! segment, so each stage is one section, and the same tag of two runs shares a chart — the
//! comparison a user opens TensorBoard for. Separate per-stage run folders would instead put
//! `sft`'s and `dpo`'s `loss` in one chart. The x axis is the [`GlobalStep`].
//!
//! Format (TensorFlow's `core/lib/io/record_writer.cc` and `core/util/event.proto`): a sequence of
//! TFRecords — u64 LE payload length, masked CRC32C of those 8 bytes, payload, masked CRC32C of
//! the payload — each holding one protobuf `Event`: the first `{wall_time, file_version:
//! "brain.Event:2"}`, then one per metrics line `{wall_time, step, summary: {value: [{tag,
//! simple_value}]…}}`. Values are f32 (`simple_value`); null (a NaN in metrics.jsonl), strings,
//! booleans and arrays are not scalars and are left out; `step` is the x axis, not a scalar.
//!
//! Record i + 1 is metrics line i (a line without numbers gets an empty summary), which is what
//! lets [`EventWriter::reopen`] cut the file exactly where `metrics.jsonl` is cut on `--resume`.
//! The file is not in `recipe.lock`: like `metrics.jsonl` it holds wall-clock times, and it is
//! derived from `metrics.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::artifact::write_atomic;

/// The event file's name in a run folder. TensorBoard reads any file whose name contains
/// `tfevents`; a fixed name lets `--resume` find it.
pub const EVENTS_FILE: &str = "events.out.tfevents.recipe";

/// The `file_version` of the first event, which TensorBoard checks.
const FILE_VERSION: &str = "brain.Event:2";

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit through a 256-entry table.
/// Speed is no concern: a metrics line is a few hundred bytes per logged step.
pub fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8))
}

/// TFRecord's masked CRC (`core/lib/hash/crc32c.h`, `Mask`): rotated right by 15 plus a constant,
/// so a CRC stored inside CRC-checked data does not weaken the outer check.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// One TFRecord around `payload`.
pub fn record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
    out
}

/// The byte ranges of the whole, CRC-valid records at the start of `bytes`; reading stops at the
/// first torn or corrupt one (what a `kill -9` mid-write leaves).
pub fn valid_records(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 12) {
        let len_bytes: [u8; 8] = header[..8].try_into().expect("8 bytes");
        let crc = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
        if crc != masked_crc32c(&len_bytes) {
            break;
        }
        let Ok(len) = usize::try_from(u64::from_le_bytes(len_bytes)) else { break };
        let start = at + 12;
        let Some(end) = start.checked_add(len) else { break };
        let (Some(payload), Some(crc)) = (bytes.get(start..end), bytes.get(end..end + 4)) else { break };
        if u32::from_le_bytes(crc.try_into().expect("4 bytes")) != masked_crc32c(payload) {
            break;
        }
        out.push(at..end + 4);
        at = end + 4;
    }
    out
}

/// Protobuf wire encoding of the few fields an event uses
/// (<https://protobuf.dev/programming-guides/encoding/>).
mod proto {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field (wire type 2): strings and embedded messages.
    pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        varint(out, u64::from(field << 3 | 2));
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

/// The protobuf `Event` of one metrics line: `wall_time` (field 1, double), `step` (field 2,
/// int64) and `summary` (field 5) whose repeated `value` (field 1) each hold `tag` (field 1,
/// string) and `simple_value` (field 2, float).
pub fn scalar_event(wall_time: f64, step: u64, scalars: &[(String, f32)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, value) in scalars {
        let mut v = Vec::new();
        proto::bytes(&mut v, 1, tag.as_bytes());
        v.push(2 << 3 | 5); // field 2, 32-bit
        v.extend_from_slice(&value.to_le_bytes());
        proto::bytes(&mut summary, 1, &v);
    }
    let mut event = Vec::new();
    event.push(1 << 3 | 1); // field 1, 64-bit
    event.extend_from_slice(&wall_time.to_le_bytes());
    event.push(2 << 3); // field 2, varint
    proto::varint(&mut event, step);
    proto::bytes(&mut event, 5, &summary);
    event
}

/// The first `Event` of a file: `wall_time` and `file_version` (field 3, string).
fn version_event(wall_time: f64) -> Vec<u8> {
    let mut event = Vec::new();
    event.push(1 << 3 | 1);
    event.extend_from_slice(&wall_time.to_le_bytes());
    proto::bytes(&mut event, 3, FILE_VERSION.as_bytes());
    event
}

/// The scalars of one metrics line: its numeric leaves, nested keys joined with `/`, under the
/// line's `stage` (or, without one, its `event`), in the line's key order; `step` left out.
pub fn scalars(line: &Value) -> Vec<(String, f32)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, f32)>) {
        match v {
            Value::Number(n) => out.extend(n.as_f64().map(|x| (prefix.to_string(), x as f32))),
            Value::Object(map) => {
                for (k, v) in map {
                    let tag = if prefix.is_empty() { k.clone() } else { format!("{prefix}/{k}") };
                    walk(&tag, v, out);
                }
            }
            _ => {}
        }
    }
    let Value::Object(map) = line else { return Vec::new() };
    let prefix = map.get("stage").or_else(|| map.get("event")).and_then(Value::as_str).unwrap_or("");
    let mut out = Vec::new();
    for (k, v) in map.iter().filter(|(k, _)| k.as_str() != "step") {
        let tag = if prefix.is_empty() { k.clone() } else { format!("{prefix}/{k}") };
        walk(&tag, v, &mut out);
    }
    out
}

/// A metrics line's `(stage, round)`: lines of one stage run share it.
type StageRun = (Option<String>, Option<u64>);

/// The x axis TensorBoard plots: a step that keeps increasing across stages, so a run's stages
/// sit one after another instead of on top of each other.
///
/// A *stage run* is a maximal sequence of metrics lines with one `(stage, round)`; each stage
/// run's steps are offset by the sum of the last steps of the stage runs before it. A stage's
/// evaluation at its step 0 lands where the previous stage ended (under its own tags). A line
/// without `step` (an event line) sits at the current position and does not start a stage run.
/// It is a function of the metrics lines before it, so it is rebuilt exactly on `--resume`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GlobalStep {
    /// Sum of the last steps of the finished stage runs.
    base: u64,
    /// The current stage run's `(stage, round)` and its last step.
    current: Option<(StageRun, u64)>,
}

impl GlobalStep {
    /// The global step of `line`, advancing the state past it.
    pub fn next(&mut self, line: &Value) -> u64 {
        let Some(step) = line.get("step").and_then(Value::as_u64) else {
            return self.base + self.current.as_ref().map_or(0, |(_, last)| *last);
        };
        let key: StageRun =
            (line.get("stage").and_then(Value::as_str).map(String::from), line.get("round").and_then(Value::as_u64));
        match &mut self.current {
            Some((k, last)) if *k == key => *last = step,
            current => {
                self.base += current.as_ref().map_or(0, |(_, last)| *last);
                *current = Some((key, step));
            }
        }
        self.base + step
    }
}

/// The open event file of a run folder.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: File,
    steps: GlobalStep,
}

impl EventWriter {
    /// Creates [`EVENTS_FILE`] in `dir` (replacing one) with its version event.
    pub fn create(dir: &Path) -> io::Result<EventWriter> {
        EventWriter::write_and_open(dir, record(&version_event(now())))
    }

    /// Reopens the event file of a run resumed after `kept` metrics lines (those `metrics.jsonl`
    /// kept): the records of those lines are kept as written (their wall times too), a record
    /// the file lacks (a kill between the metrics line and its event, or a torn write) is made
    /// again from its line, and every later record is dropped, since the resumed run writes
    /// those lines again. The file is replaced atomically. Errors: reading or writing the file.
    pub fn reopen(dir: &Path, kept: &[Value]) -> io::Result<EventWriter> {
        let path = dir.join(EVENTS_FILE);
        let old = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let records = valid_records(&old);
        let mut bytes = match records.first() {
            Some(r) => old[r.clone()].to_vec(),
            None => record(&version_event(now())),
        };
        let mut steps = GlobalStep::default();
        for (i, line) in kept.iter().enumerate() {
            let step = steps.next(line);
            match records.get(i + 1) {
                Some(r) => bytes.extend_from_slice(&old[r.clone()]),
                None => bytes.extend(record(&scalar_event(now(), step, &scalars(line)))),
            }
        }
        let mut writer = EventWriter::write_and_open(dir, bytes)?;
        writer.steps = steps;
        Ok(writer)
    }

    fn write_and_open(dir: &Path, bytes: Vec<u8>) -> io::Result<EventWriter> {
        let path = dir.join(EVENTS_FILE);
        write_atomic(&path, &bytes)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(EventWriter { path, file, steps: GlobalStep::default() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the event of one metrics line, written whole in one `write`.
    pub fn append(&mut self, line: &Value) -> io::Result<()> {
        let step = self.steps.next(line);
        self.file.write_all(&record(&scalar_event(now(), step, &scalars(line))))?;
        self.file.flush()
    }

    /// Forces the events to disk (at checkpoints, with `metrics.jsonl`).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Seconds since the Unix epoch, TensorBoard's `wall_time`.
fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crc32c_matches_known_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 (iSCSI) B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(masked_crc32c(b"123456789"), MASKED_123456789);
    }

    /// `tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c(b"123456789")`
    /// (tensorboard 2.21).
    const MASKED_123456789: u32 = 0xC78A_B0E5;

    #[test]
    fn record_frames_length_and_payload_with_their_crcs() {
        let r = record(b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[8..12], &masked_crc32c(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(&r[15..], &masked_crc32c(b"abc").to_le_bytes());
        let mut two = [record(b"abc"), record(b"")].concat();
        assert_eq!(valid_records(&two), vec![0..19, 19..35]);
        // A torn record and a flipped bit both end the valid prefix.
        assert_eq!(valid_records(&two[..30]), vec![0..19]);
        two[14] ^= 1;
        assert!(valid_records(&two).is_empty());
    }

    #[test]
    fn event_is_encoded_field_by_field() {
        let bytes = scalar_event(1.5, 300, &[("sft/loss".into(), 0.25)]);
        let mut want = vec![0x09];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        // Step 300 as a varint, then the summary (17 bytes) holding one value (15 bytes: the tag's
        // 2 + 8 and the float's 1 + 4).
        want.extend_from_slice(&[0x10, 0xAC, 0x02]);
        want.extend_from_slice(&[0x2A, 17, 0x0A, 15, 0x0A, 8]);
        want.extend_from_slice(b"sft/loss");
        want.push(0x15);
        want.extend_from_slice(&0.25f32.to_le_bytes());
        assert_eq!(bytes, want);
        let mut version = vec![0x09];
        version.extend_from_slice(&2.0f64.to_le_bytes());
        version.extend_from_slice(&[0x1A, 13]);
        version.extend_from_slice(b"brain.Event:2");
        assert_eq!(version_event(2.0), version);
    }

    #[test]
    fn scalars_flatten_nested_numbers_under_the_stage() {
        let line = json!({"eval": {"held_acc": {"accuracy": 0.5, "total": 300}}, "loss": null,
            "stage": "sft", "step": 3, "timing": {"tokens_per_s": 10.0}, "note": "x", "ok": true});
        let tags: Vec<_> = scalars(&line);
        assert_eq!(
            tags,
            vec![
                ("sft/eval/held_acc/accuracy".to_string(), 0.5),
                ("sft/eval/held_acc/total".to_string(), 300.0),
                ("sft/timing/tokens_per_s".to_string(), 10.0),
            ]
        );
        let skipped = json!({"event": "skipped_rows", "file": "a.jsonl", "count": 2, "lines": [3, 9]});
        assert_eq!(scalars(&skipped), vec![("skipped_rows/count".to_string(), 2.0)]);
    }

    #[test]
    fn global_step_continues_across_stages_and_rounds() {
        let mut g = GlobalStep::default();
        let lines = [
            json!({"event": "skipped_rows", "count": 1}),
            json!({"stage": "sft", "step": 0}),
            json!({"stage": "sft", "step": 10}),
            json!({"stage": "sft", "step": 20}),
            json!({"stage": "score", "event": "score", "kept": 5}),
            json!({"stage": "dpo", "round": 0, "step": 0}),
            json!({"stage": "dpo", "round": 0, "step": 5}),
            json!({"stage": "dpo", "round": 1, "step": 5}),
        ];
        let steps: Vec<u64> = lines.iter().map(|l| g.next(l)).collect();
        assert_eq!(steps, vec![0, 0, 10, 20, 20, 20, 25, 30]);
    }

    #[test]
    fn reopen_keeps_written_records_remakes_missing_ones_and_drops_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<Value> = (1..=4).map(|s| json!({"stage": "sft", "step": s, "loss": s})).collect();
        let mut w = EventWriter::create(dir.path()).unwrap();
        for line in &lines[..3] {
            w.append(line).unwrap();
        }
        drop(w);
        let path = dir.path().join(EVENTS_FILE);
        let written = std::fs::read(&path).unwrap();
        // A kill mid-write leaves a torn record.
        let mut torn = written.clone();
        torn.extend_from_slice(&record(b"half")[..7]);
        std::fs::write(&path, &torn).unwrap();

        // Two kept lines: their records are kept byte for byte, the third is dropped.
        let w = EventWriter::reopen(dir.path(), &lines[..2]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let ranges = valid_records(&written);
        assert_eq!(bytes, written[..ranges[2].end]);
        drop(w);

        // Four kept lines but two records: the missing two are made again, then appends go on.
        let mut w = EventWriter::reopen(dir.path(), &lines).unwrap();
        w.append(&json!({"stage": "sft", "step": 5})).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let ranges = valid_records(&bytes);
        assert_eq!(ranges.len(), 6);
        assert_eq!(ranges.last().unwrap().end, bytes.len());
        let step_of = |r: &std::ops::Range<usize>| bytes[r.start + 12 + 10]; // varint after wall_time
        assert_eq!(ranges[1..].iter().map(step_of).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);

        // A missing file is made from the kept lines alone.
        std::fs::remove_file(&path).unwrap();
        EventWriter::reopen(dir.path(), &lines[..1]).unwrap();
        assert_eq!(valid_records(&std::fs::read(&path).unwrap()).len(), 2);
    }
}
