//! Checkpoints: one folder per checkpoint under a run's `checkpoints/`, holding the model as a
//! Hugging Face folder (`model/`, opens in transformers unchanged) and the state needed to resume
//! the run bit for bit (`optimizer.safetensors`: AdamW moments; `trainer_state.json`: stage,
//! step, optimiser step count, the curriculum, experience and objective state, the number of
//! metrics lines written).
//!
//! Invariants: a checkpoint folder is built under a temporary name (`NAME.tmp-…`), every file
//! and the folder are fsynced, and only then is it renamed to `NAME`; so any folder without
//! `.tmp-` in its name is complete, a crash leaves at worst a stale temporary (removed by
//! `remove_stale`), and the previous checkpoint is never touched. The latest checkpoint is the one
//! with the highest (stage index, round, step).

use crate::artifact::{sync_dir, temp_suffix, write_atomic};
use crate::model::{CausalLm, Device, ModelError, Tensor};
use crate::optim::AdamW;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

pub const MODEL_DIR: &str = "model";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
const TEMP_MARK: &str = ".tmp-";

/// Where a stage stood when the checkpoint was written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Stage name and its position in the run's stage order.
    pub stage: String,
    pub stage_index: usize,
    /// The round, for a stage that runs in rounds (exclusive buckets); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<RoundIndex>,
    /// Completed optimiser steps of this stage (of this round, in rounds), and its total.
    pub step: u64,
    pub total_steps: u64,
    /// AdamW's own step count (differs from `step` when moments were kept from an earlier stage).
    pub optimizer_steps: u64,
    /// The stage's resumable state beyond model and optimiser: its curriculum's (data
    /// position, estimates), its experience source's and its objective's (running means).
    pub parts: PartsState,
    /// Lines of `metrics.jsonl` written when the checkpoint was taken.
    pub metrics_lines: u64,
}

/// Which of a stage's rounds: `index` (0-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundIndex {
    /// This round, 0-based.
    pub index: u32,
    /// The stage's rounds.
    pub count: u32,
}

impl TrainState {
    /// Whether the run this state belongs to had finished: the stage, or its round.
    pub fn complete(&self) -> bool {
        self.step >= self.total_steps
    }

    /// Whether the whole stage had finished: its last round, when it runs in rounds.
    pub fn stage_complete(&self) -> bool {
        self.complete() && self.round.is_none_or(|r| r.index + 1 >= r.count)
    }

    /// Where the checkpoint lies in the run: (stage index, round index, step), ordered as
    /// training proceeds.
    pub fn position(&self) -> (usize, u32, u64) {
        (self.stage_index, self.round.map_or(0, |r| r.index), self.step)
    }

    /// The checkpoint folder name: `02-sft-step000300`, or `01-dpo-r02-step000080` for round
    /// 2 of a stage that runs in rounds.
    pub fn folder_name(&self) -> String {
        format!("{}{:06}", folder_prefix(self.stage_index, &self.stage, self.round.map(|r| r.index)), self.step)
    }
}

/// The folder name of a stage's (or round's) checkpoints up to the step: `02-sft-step`,
/// `01-dpo-r02-step`.
pub fn folder_prefix(stage_index: usize, stage: &str, round: Option<u32>) -> String {
    match round {
        Some(r) => format!("{stage_index:02}-{stage}-r{r:02}-step"),
        None => format!("{stage_index:02}-{stage}-step"),
    }
}

/// The resumable state of a stage's curriculum, experience source and objective.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartsState {
    pub curriculum: Value,
    pub experience: Value,
    pub objective: Value,
}

/// A problem writing or reading a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("checkpoint `{}`: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// Writes a checkpoint of `model`, `optim` and `state` into `checkpoints/`, atomically, and
/// returns its folder.
pub fn write(
    checkpoints: &Path,
    model: &CausalLm,
    optim: &AdamW,
    state: &TrainState,
) -> Result<PathBuf, CheckpointError> {
    fs::create_dir_all(checkpoints).map_err(io_err(checkpoints))?;
    let name = state.folder_name();
    let tmp = checkpoints.join(format!("{name}{TEMP_MARK}{}", temp_suffix()));
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;

    model.save(&tmp.join(MODEL_DIR))?;
    let moments: HashMap<String, Tensor> = optim.state_tensors()?.into_iter().collect();
    let optim_path = tmp.join(OPTIMIZER_FILE);
    candle_core::safetensors::save(&moments, &optim_path)?;
    let state_text = serde_json::to_vec_pretty(state)
        .map_err(|e| CheckpointError::Corrupt { path: tmp.clone(), message: e.to_string() })?;
    write_atomic(&tmp.join(STATE_FILE), &state_text).map_err(io_err(&tmp))?;
    sync_tree(&tmp).map_err(io_err(&tmp))?;

    let dest = checkpoints.join(&name);
    if dest.exists() {
        // The same step written before a crash (resumed runs reach it again): the new one is
        // identical by construction, so replacing it loses nothing.
        fs::remove_dir_all(&dest).map_err(io_err(&dest))?;
    }
    fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    sync_dir(checkpoints).map_err(io_err(checkpoints))?;
    Ok(dest)
}

/// fsync of every file and folder under `dir`.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path)?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// A complete checkpoint on disk.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainState,
}

impl Checkpoint {
    /// Opens the checkpoint folder `dir`.
    pub fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let path = dir.join(STATE_FILE);
        let text = fs::read(&path).map_err(io_err(&path))?;
        let state =
            serde_json::from_slice(&text).map_err(|e| CheckpointError::Corrupt { path, message: e.to_string() })?;
        Ok(Checkpoint { dir: dir.to_path_buf(), state })
    }

    /// The latest complete checkpoint under `checkpoints/` (by [`TrainState::position`]), if any.
    pub fn latest(checkpoints: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
        let entries = match fs::read_dir(checkpoints) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CheckpointError::Io { path: checkpoints.to_path_buf(), source: e }),
        };
        let mut best: Option<Checkpoint> = None;
        for entry in entries {
            let path = entry.map_err(io_err(checkpoints))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !path.is_dir() || name.contains(TEMP_MARK) {
                continue;
            }
            let ck = Checkpoint::open(&path)?;
            if best.as_ref().is_none_or(|b| ck.state.position() > b.state.position()) {
                best = Some(ck);
            }
        }
        Ok(best)
    }

    /// Removes temporaries left by a crash during a checkpoint write.
    pub fn remove_stale(checkpoints: &Path) -> Result<(), CheckpointError> {
        let Ok(entries) = fs::read_dir(checkpoints) else {
            return Ok(());
        };
        for entry in entries {
            let path = entry.map_err(io_err(checkpoints))?.path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().contains(TEMP_MARK)) {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    /// The Hugging Face model folder of the checkpoint.
    pub fn model_dir(&self) -> PathBuf {
        self.dir.join(MODEL_DIR)
    }

    pub fn load_model(&self, device: &Device) -> Result<CausalLm, CheckpointError> {
        Ok(CausalLm::load(&self.model_dir(), device)?)
    }

    /// The saved AdamW moments, for `AdamW::load_state`.
    pub fn load_moments(&self, device: &Device) -> Result<HashMap<String, Tensor>, CheckpointError> {
        Ok(candle_core::safetensors::load(self.dir.join(OPTIMIZER_FILE), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(checkpoints: &Path, name: &str, stage_index: usize, step: u64) {
        let dir = checkpoints.join(name);
        fs::create_dir_all(&dir).unwrap();
        let state = TrainState {
            stage: "s".into(),
            stage_index,
            round: None,
            step,
            total_steps: 10,
            optimizer_steps: step,
            parts: PartsState::default(),
            metrics_lines: step,
        };
        fs::write(dir.join(STATE_FILE), serde_json::to_vec(&state).unwrap()).unwrap();
    }

    #[test]
    fn latest_orders_by_stage_then_step_and_ignores_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(Checkpoint::latest(&root.join("none")).unwrap().is_none());
        fake(root, "00-s-step000009", 0, 9);
        fake(root, "01-s-step000002", 1, 2);
        fake(root, "01-s-step000004.tmp-1-2", 1, 4);
        let latest = Checkpoint::latest(root).unwrap().unwrap();
        assert_eq!((latest.state.stage_index, latest.state.step), (1, 2));
        assert!(!latest.state.complete());
        Checkpoint::remove_stale(root).unwrap();
        assert!(!root.join("01-s-step000004.tmp-1-2").exists());
        assert!(root.join("01-s-step000002").exists());
    }

    #[test]
    fn rounds_order_checkpoints_and_name_their_folders() {
        let state = |round: u32, step: u64| TrainState {
            stage: "dpo".into(),
            stage_index: 1,
            round: Some(RoundIndex { index: round, count: 3 }),
            step,
            total_steps: 4,
            optimizer_steps: step,
            parts: PartsState::default(),
            metrics_lines: 0,
        };
        assert_eq!(state(2, 40).folder_name(), "01-dpo-r02-step000040");
        assert!(state(1, 1).position() > state(0, 4).position(), "a later round is later at any step");
        assert!(state(0, 4).complete() && !state(0, 4).stage_complete(), "round 0 of 3 ends, the stage goes on");
        assert!(state(2, 4).stage_complete());
        let dir = tempfile::tempdir().unwrap();
        for s in [state(0, 4), state(1, 1)] {
            let folder = dir.path().join(s.folder_name());
            fs::create_dir_all(&folder).unwrap();
            fs::write(folder.join(STATE_FILE), serde_json::to_vec(&s).unwrap()).unwrap();
        }
        let latest = Checkpoint::latest(dir.path()).unwrap().unwrap();
        assert_eq!(latest.state, state(1, 1));
        // A stage without rounds writes no `round` field (older checkpoints read unchanged).
        let plain = TrainState { round: None, ..state(0, 1) };
        assert!(!serde_json::to_string(&plain).unwrap().contains("round"));
    }
}
