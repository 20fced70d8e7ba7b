//! The run folder a `recipe run` leaves behind: `recipe.lock` (what was run, on what inputs),
//! `metrics.jsonl` (one line per logged step) and its TensorBoard mirror
//! (`events.out.tfevents.recipe`, see `tensorboard.rs`), `checkpoints/`, `data/` (datasets stages
//! generated), and a `README.md` that explains them to whoever opens the folder.
//!
//! Invariants: every metrics line is written whole and flushed before the step that produced it
//! is considered done, so a crash loses no logged step; wall-clock measurements live only under the
//! line's `"timing"` key, so two runs of one recipe on one device have equal lines once that key
//! is dropped (`without_timing`); `recipe.lock` is written atomically (temporary file, fsync,
//! rename) and never partially visible.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::tensorboard::{EventWriter, EVENTS_FILE};

/// The key under which a metrics line keeps its timing measurements.
pub const TIMING_KEY: &str = "timing";
/// File names inside a run folder.
pub const LOCK_FILE: &str = "recipe.lock";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const DATA_DIR: &str = "data";
pub const README_FILE: &str = "README.md";

/// What every run folder says about itself.
const RUN_README: &str = "\
# A `recipe run` folder

- `recipe.lock` (JSON): the recipe's canonical text and its sha256, the resolved plan (every
  default filled in), the seed, the sha256 of every data file and model file read, the
  `recipe-runtime` version, the device, the absolute folders relative paths were resolved in
  (`roots`), and once the run finished, `final`: its final model's folder, relative to this one.
  `recipe verify` re-runs from it; `recipe generate`/`score --model` accept this folder.
  `skipped` lists, per file, rows that `on_error = skip` left out (count and first lines).
- `metrics.jsonl`: first, one `{\"event\": \"skipped_rows\", \"file\", \"count\", \"lines\"}` line per
  file with rows left out by `on_error = skip`; then one JSON object per logged step: `stage`, `step` (completed optimiser
  steps), `loss` and `grad_norm` (pre-clipping; means since the previous line), `lr` (this
  step's), `tokens`, objective metrics, `eval` (per evaluator: `accuracy`, `correct`, `total`)
  on evaluation steps, and `timing` (`tokens_per_s`, `elapsed_s`). Everything except `timing`
  is identical when the same recipe runs again on the same device.
- `checkpoints/NN-STAGE-stepSSSSSS/` (`NN-STAGE-rRR-stepSSSSSS/` for round RR of a stage that
  runs in rounds, whose metrics lines carry `round`): `model/` is a Hugging Face folder (config.json,
  model.safetensors, tokenizer.json, generation_config.json) that transformers opens unchanged;
  `optimizer.safetensors` (AdamW moments) and `trainer_state.json` (stage, step, data position,
  metrics lines written) let `recipe run --resume` continue bit for bit. Folders named
  `*.tmp-*` are unfinished writes from a crash and are ignored.
- `data/NN-STAGE.jsonl`: the rows a stage that generates data produced (`score`: the rows it
  kept, each with its `score`), one JSON object per line with the row's fields in order; its
  sha256 is under `generated` in `recipe.lock`. A `score` stage also logs one
  `{\"event\": \"score\", \"stage\", \"measure\", \"select\", \"rows\", \"kept\", …}` metrics line.
- `events.out.tfevents.recipe`: the same metrics for TensorBoard (`tensorboard --logdir` this
  folder or the folder of runs): one scalar per number of each metrics line, tagged
  `STAGE/NAME` with nested names joined by `/` (`sft/loss`, `sft/eval/held_acc/accuracy`,
  `sft/timing/tokens_per_s`; `skipped_rows/count` for a line without a stage), at a global step
  that goes on across stages (each stage's steps after the previous stages' last steps). A
  resumed run rewrites it to the lines `metrics.jsonl` kept, so no scalar is lost or doubled.
- `report.html`: a summary of the run and plots of its metrics (`recipe report RUN` rebuilds it).
";

/// The sha256 of one file that a run read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

impl FileDigest {
    /// Digest of bytes already read from `path` (hash exactly what was parsed).
    pub fn of_bytes(path: &Path, bytes: &[u8]) -> FileDigest {
        FileDigest { path: path.display().to_string(), sha256: sha256_hex(bytes), bytes: bytes.len() as u64 }
    }

    /// Digest of the file at `path`, read in 1 MiB pieces: hashing a model's weights never
    /// holds the whole file in memory. Errors: opening or reading the file.
    pub fn of_file(path: &Path) -> io::Result<FileDigest> {
        let mut file = File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(FileDigest { path: path.display().to_string(), sha256: hex(&hasher.finalize()), bytes })
    }

    /// Digests of every file under `dir` (a model folder), sorted by path; of `dir` itself when it
    /// is a file (a model in one file: GGUF).
    pub fn of_dir(dir: &Path) -> io::Result<Vec<FileDigest>> {
        if dir.is_file() {
            return Ok(vec![FileDigest::of_file(dir)?]);
        }
        let mut files = Vec::new();
        collect_files(dir, &mut files)?;
        files.sort();
        files.iter().map(|f| FileDigest::of_file(f)).collect()
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rows of one file that `on_error = skip` left out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkippedRows {
    /// The file as the recipe names it (`jsonl("rows.jsonl")`).
    pub file: String,
    /// How many rows were skipped.
    pub count: usize,
    /// The 1-based lines of the first few of them (at most `data::jsonl::MAX_REPORTED`).
    pub lines: Vec<u64>,
}

impl SkippedRows {
    /// The metrics.jsonl line that records them (`"event": "skipped_rows"`; no `step`).
    pub fn metrics_line(&self) -> Value {
        serde_json::json!({"event": "skipped_rows", "file": self.file, "count": self.count, "lines": self.lines})
    }

    /// `skipped 3 malformed rows in rows.jsonl (lines 3, 5, 9)`, with `…` when more were skipped
    /// than lines are listed.
    pub fn describe(&self) -> String {
        let mut lines: Vec<String> = self.lines.iter().map(u64::to_string).collect();
        if self.count > self.lines.len() {
            lines.push("…".into());
        }
        let noun = if self.lines.len() == 1 && self.count == 1 { "line" } else { "lines" };
        format!("skipped {} malformed rows in {} ({noun} {})", self.count, self.file, lines.join(", "))
    }
}

/// Everything needed to re-run a recipe and check the result: `recipe.lock`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecipeLock {
    /// The recipe's canonical text (formatted), and its sha256.
    pub recipe: String,
    pub recipe_sha256: String,
    /// The resolved plan, every default filled in (produced by the compiler).
    pub plan: Value,
    pub seed: u64,
    /// sha256 of every data file and model file read.
    pub inputs: Vec<FileDigest>,
    /// `recipe-runtime` crate version.
    pub version: String,
    /// The device the run used (`cpu`, `cuda:0`).
    pub device: String,
    /// The folders the recipe could read (its own folder, then the data roots), so `verify` and
    /// `--resume` resolve relative paths as the original run did.
    #[serde(default)]
    pub roots: Vec<PathBuf>,
    /// `recipe run --max-steps N`: every stage was capped at N steps.
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Set when the run finished: its final model, the Hugging Face folder of the last stage's
    /// last checkpoint, relative to the run folder (`checkpoints/00-sft-step000006/model`).
    /// `recipe generate` and `recipe score` given the run folder use it; `--resume` refuses a
    /// run that has it.
    #[serde(default, rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_model: Option<String>,
    /// Rows `on_error = skip` left out, per file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedRows>,
    /// sha256 of every dataset a stage generated, paths relative to the run folder
    /// (`data/01-scored.jsonl`), added as each is written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generated: Vec<FileDigest>,
    /// The frozen reference of each stage that has one, as it was when the stage started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<ReferenceDigest>,
}

/// A stage's reference model: what it names and the sha256 of its weights
/// ([`weights_sha256`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceDigest {
    pub stage: String,
    /// The 1-based round, for a stage that trains in rounds (each round has its reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// The model the stage's `reference` names (`policy`, `sft.model`).
    pub model: String,
    pub sha256: String,
}

/// sha256 over named f32 tensors in the order given: for each, its name, a NUL, its dims as
/// little-endian u64s and its values as little-endian f32 bytes. Equal for equal weights on
/// any device.
pub fn weights_sha256<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a candle_core::Tensor)>,
) -> candle_core::Result<String> {
    let mut hasher = Sha256::new();
    for (name, t) in tensors {
        hasher.update(name.as_bytes());
        hasher.update([0u8]);
        for d in t.dims() {
            hasher.update((*d as u64).to_le_bytes());
        }
        let values: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
        for v in values {
            hasher.update(v.to_le_bytes());
        }
    }
    Ok(hex(&hasher.finalize()))
}

impl RecipeLock {
    /// A lock for `recipe` (canonical text); the hash and crate version are filled in here.
    pub fn new(recipe: String, plan: Value, seed: u64, inputs: Vec<FileDigest>, device: String) -> RecipeLock {
        RecipeLock {
            recipe_sha256: sha256_hex(recipe.as_bytes()),
            recipe,
            plan,
            seed,
            inputs,
            version: env!("CARGO_PKG_VERSION").to_string(),
            device,
            roots: Vec::new(),
            max_steps: None,
            final_model: None,
            skipped: Vec::new(),
            generated: Vec::new(),
            references: Vec::new(),
        }
    }
}

/// A problem with the run folder itself.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Reading or writing a file of the run folder failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// `--out` named a folder that already holds a run.
    #[error("`{}` already holds a run; choose another --out folder or resume it with --resume", path.display())]
    Exists { path: PathBuf },
    /// A file of the run folder is not what this version writes.
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
}

impl ArtifactError {
    pub fn code(&self) -> &'static str {
        match self {
            ArtifactError::Io { .. } => "recipe::run::io",
            ArtifactError::Exists { .. } => "recipe::run::exists",
            ArtifactError::Corrupt { .. } => "recipe::run::corrupt",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io { path: path.to_path_buf(), source }
}

/// An open run folder.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    metrics: File,
    lines: u64,
    /// The TensorBoard mirror of `metrics.jsonl` (`tensorboard.rs`).
    events: EventWriter,
}

impl RunDir {
    /// A new folder `<runs>/<name>-<UTC timestamp>` (suffixed `-2`, `-3` … if taken).
    pub fn create_in(runs: &Path, name: &str) -> Result<RunDir, ArtifactError> {
        let stem = format!("{name}-{}", utc_stamp(SystemTime::now()));
        let mut root = runs.join(&stem);
        let mut n = 2;
        while root.exists() {
            root = runs.join(format!("{stem}-{n}"));
            n += 1;
        }
        RunDir::create_at(&root)
    }

    /// The run folder `dir` (`--out DIR`): created if missing; refused if it already holds a run.
    pub fn create_at(dir: &Path) -> Result<RunDir, ArtifactError> {
        if dir.join(LOCK_FILE).exists() || dir.join(METRICS_FILE).exists() {
            return Err(ArtifactError::Exists { path: dir.to_path_buf() });
        }
        fs::create_dir_all(dir.join(CHECKPOINTS_DIR)).map_err(io_err(dir))?;
        let readme = dir.join(README_FILE);
        write_atomic(&readme, RUN_README.as_bytes()).map_err(io_err(&readme))?;
        let path = dir.join(METRICS_FILE);
        let metrics = File::create(&path).map_err(io_err(&path))?;
        let events = EventWriter::create(dir).map_err(io_err(&dir.join(EVENTS_FILE)))?;
        Ok(RunDir { root: dir.to_path_buf(), metrics, lines: 0, events })
    }

    /// Reopens an existing run to resume it after its checkpoint that had written `lines` metrics
    /// lines: later lines (logged after that checkpoint, before the crash) are cut, since the
    /// resumed run writes them again, and so are their TensorBoard events
    /// ([`EventWriter::reopen`]).
    pub fn reopen(dir: &Path, lines: u64) -> Result<RunDir, ArtifactError> {
        let path = dir.join(METRICS_FILE);
        let file = File::open(&path).map_err(io_err(&path))?;
        let mut keep_bytes = 0u64;
        let mut kept = Vec::new();
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        for n in 0..lines {
            line.clear();
            let read = reader.read_line(&mut line).map_err(io_err(&path))?;
            if read == 0 || !line.ends_with('\n') {
                return Err(ArtifactError::Corrupt {
                    path,
                    message: format!("the checkpoint expects {lines} metrics lines, the file has {n}"),
                });
            }
            keep_bytes += read as u64;
            kept.push(
                serde_json::from_str::<Value>(&line).map_err(|e| ArtifactError::Corrupt {
                    path: path.clone(),
                    message: format!("line {}: {e}", n + 1),
                })?,
            );
        }
        let metrics = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
        metrics.set_len(keep_bytes).map_err(io_err(&path))?;
        let events = EventWriter::reopen(dir, &kept).map_err(io_err(&dir.join(EVENTS_FILE)))?;
        let mut run = RunDir { root: dir.to_path_buf(), metrics, lines, events };
        run.metrics.sync_data().map_err(io_err(&path))?;
        // Appends go after the kept lines.
        use std::io::Seek;
        run.metrics.seek(io::SeekFrom::End(0)).map_err(io_err(&path))?;
        Ok(run)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.root.join(CHECKPOINTS_DIR)
    }

    /// Metrics lines written so far (what a checkpoint records).
    pub fn metrics_lines(&self) -> u64 {
        self.lines
    }

    /// Writes `bytes` atomically as `data/<name>` (a dataset a stage generated) and records its
    /// digest under `generated` in the lock (replacing an earlier one of that path); returns it.
    pub fn write_data(&self, name: &str, bytes: &[u8]) -> Result<FileDigest, ArtifactError> {
        let dir = self.root.join(DATA_DIR);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(name);
        write_atomic(&path, bytes).map_err(io_err(&path))?;
        let digest = FileDigest::of_bytes(Path::new(&format!("{DATA_DIR}/{name}")), bytes);
        let mut lock = read_lock(&self.root)?;
        lock.generated.retain(|d| d.path != digest.path);
        lock.generated.push(digest.clone());
        self.write_lock(&lock)?;
        Ok(digest)
    }

    /// Writes `recipe.lock` atomically.
    pub fn write_lock(&self, lock: &RecipeLock) -> Result<(), ArtifactError> {
        let path = self.root.join(LOCK_FILE);
        let text = serde_json::to_string_pretty(lock)
            .map_err(|e| ArtifactError::Corrupt { path: path.clone(), message: e.to_string() })?;
        write_atomic(&path, text.as_bytes()).map_err(io_err(&path))
    }

    /// Appends one metrics line (a JSON object) and flushes it to the OS, then its TensorBoard
    /// event (after the line, so an event never exists without its line).
    pub fn append_metrics(&mut self, line: &Value) -> Result<(), ArtifactError> {
        let path = self.root.join(METRICS_FILE);
        let mut text = line.to_string();
        text.push('\n');
        self.metrics.write_all(text.as_bytes()).map_err(io_err(&path))?;
        self.metrics.flush().map_err(io_err(&path))?;
        self.lines += 1;
        self.events.append(line).map_err(io_err(self.events.path()))
    }

    /// Forces logged lines and their events to disk (at checkpoints: a checkpoint never names
    /// lines that are lost).
    pub fn sync(&self) -> Result<(), ArtifactError> {
        self.metrics.sync_data().map_err(io_err(&self.root.join(METRICS_FILE)))?;
        self.events.sync().map_err(io_err(self.events.path()))
    }
}

/// Reads `recipe.lock` of a run folder.
pub fn read_lock(dir: &Path) -> Result<RecipeLock, ArtifactError> {
    let path = dir.join(LOCK_FILE);
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    serde_json::from_str(&text).map_err(|e| ArtifactError::Corrupt { path, message: e.to_string() })
}

/// Reads every line of `metrics.jsonl` of a run folder.
pub fn read_metrics(dir: &Path) -> Result<Vec<Value>, ArtifactError> {
    let path = dir.join(METRICS_FILE);
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| ArtifactError::Corrupt { path: path.clone(), message: format!("line {}: {e}", i + 1) })
        })
        .collect()
}

/// A metrics line without its timing measurements: what determinism checks compare.
pub fn without_timing(line: &Value) -> Value {
    let mut line = line.clone();
    if let Value::Object(map) = &mut line {
        map.remove(TIMING_KEY);
    }
    line
}

/// Writes `bytes` to `path` so readers see the old file or the new one, never a part: a temporary
/// sibling, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!("{name}.tmp-{}", temp_suffix()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// fsync of a folder, so a rename inside it survives a crash (a no-op where folders cannot be
/// opened, e.g. Windows).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(f) => f.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

/// A suffix unique to this process and moment, for temporary names.
pub fn temp_suffix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{nanos:09}", std::process::id())
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamp_is_utc_civil_time() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101-000000");
        // 2024-02-29T12:34:56Z
        assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(1_709_210_096)), "20240229-123456");
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn streamed_file_digest_equals_the_digest_of_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        // Longer than one read buffer, and not a multiple of it.
        let bytes: Vec<u8> =
            (0..(1u32 << 20) * 2 + 12_345).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let path = dir.path().join("weights.bin");
        fs::write(&path, &bytes).unwrap();
        assert_eq!(FileDigest::of_file(&path).unwrap(), FileDigest::of_bytes(&path, &bytes));
        let empty = dir.path().join("empty");
        fs::write(&empty, b"").unwrap();
        assert_eq!(FileDigest::of_file(&empty).unwrap().sha256, sha256_hex(b""));
        let digests = FileDigest::of_dir(dir.path()).unwrap();
        assert_eq!(digests.iter().map(|d| d.bytes).collect::<Vec<_>>(), vec![0, bytes.len() as u64]);
        assert_eq!(FileDigest::of_dir(&path).unwrap(), vec![FileDigest::of_bytes(&path, &bytes)], "a one-file model");
    }

    #[test]
    fn metrics_reopen_cuts_lines_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("run");
        let mut run = RunDir::create_at(&root).unwrap();
        for step in 0..5 {
            run.append_metrics(&serde_json::json!({"step": step, "timing": {"elapsed_s": 1.0}})).unwrap();
        }
        drop(run);
        assert!(matches!(RunDir::create_at(&root), Err(ArtifactError::Exists { .. })));
        let mut run = RunDir::reopen(&root, 2).unwrap();
        run.append_metrics(&serde_json::json!({"step": 2})).unwrap();
        let lines = read_metrics(&root).unwrap();
        let steps: Vec<_> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![0, 1, 2]);
        assert_eq!(without_timing(&lines[0]), serde_json::json!({"step": 0}));
        assert!(RunDir::reopen(&root, 9).is_err());
        assert!(fs::read_to_string(root.join(README_FILE)).unwrap().contains("metrics.jsonl"));
    }

    #[test]
    fn lock_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create_in(dir.path(), "demo").unwrap();
        assert!(run.root().file_name().unwrap().to_string_lossy().starts_with("demo-"));
        let lock =
            RecipeLock::new("recipe \"x\" {}\n".into(), serde_json::json!({"stages": []}), 7, vec![], "cpu".into());
        run.write_lock(&lock).unwrap();
        assert_eq!(read_lock(run.root()).unwrap(), lock);
        assert_eq!(lock.recipe_sha256, sha256_hex(lock.recipe.as_bytes()));
    }
}
