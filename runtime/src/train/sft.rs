//! Supervised fine-tuning: completion-only NLL (TRL's `SFTTrainer` with `completion_only_loss`)
//! over shuffled epochs of a `{prompt, completion}` dataset.
//!
//! Invariants: epoch `e`'s order is a pure function of (seed, stage, e) — the stream
//! `Rng::derive(seed, "stage/<stage>/shuffle/<e>")` — so the objective's whole resumable state is
//! `(epoch, position)`; a batch that runs past the end of an epoch continues into the next, so
//! every batch is full; EOS is appended by the collator, never stored in the data.

use super::{Batch, LoopConfig, LossOutput, Objective, Schedule, TrainError};
use crate::data::Dataset;
use crate::model::{self, CausalLm, TokenBatch};
use crate::optim::AdamWConfig;
use crate::rng::Rng;
use serde_json::{json, Value};
use std::sync::Arc;

/// Everything an `sft(...)` stage sets; numeric schedules come from the recipe.
#[derive(Clone, Debug)]
pub struct SftConfig {
    pub steps: u64,
    /// Rows per micro-batch (TRL's `per_device_train_batch_size`).
    pub batch: usize,
    pub lr: Schedule,
    pub weight_decay: Schedule,
    pub betas: (f64, f64),
    pub eps: f64,
    /// Global-norm clipping threshold; `None` disables clipping.
    pub clip: Option<f64>,
    /// Micro-batches per optimiser step (effective batch = `batch × accumulate`).
    pub accumulate: u32,
    pub eval_every: Option<u64>,
    pub log_every: u64,
    pub checkpoint_every: Option<u64>,
    /// The recipe seed; the shuffle stream derives from it and the stage name.
    pub seed: u64,
}

impl SftConfig {
    /// TRL-like defaults: AdamW (0.9, 0.999, 1e-8), no weight decay, clip 1.0, no accumulation.
    pub fn new(steps: u64, batch: usize, lr: Schedule) -> SftConfig {
        SftConfig {
            steps,
            batch,
            lr,
            weight_decay: Schedule::constant(0.0),
            betas: (0.9, 0.999),
            eps: 1e-8,
            clip: Some(1.0),
            accumulate: 1,
            eval_every: None,
            log_every: 1,
            checkpoint_every: None,
            seed: 0,
        }
    }

    pub fn adam(&self) -> AdamWConfig {
        AdamWConfig { beta1: self.betas.0, beta2: self.betas.1, eps: self.eps }
    }

    /// The loop settings for stage `stage` at position `stage_index` of the run.
    pub fn loop_config(&self, stage: &str, stage_index: usize) -> LoopConfig {
        LoopConfig {
            stage: stage.to_string(),
            stage_index,
            steps: self.steps,
            accumulate: self.accumulate,
            lr: self.lr.clone(),
            weight_decay: self.weight_decay.clone(),
            adam: self.adam(),
            clip: self.clip,
            log_every: self.log_every,
            eval_every: self.eval_every,
            checkpoint_every: self.checkpoint_every,
            checkpoint_at_end: true,
        }
    }
}

/// The SFT objective over one dataset.
pub struct SftObjective {
    stage: String,
    seed: u64,
    batch: usize,
    prompts: Vec<Arc<str>>,
    completions: Vec<Arc<str>>,
    ids: Vec<u64>,
    epoch: u64,
    pos: usize,
    order: Vec<usize>,
}

impl SftObjective {
    /// An objective over `data`'s `prompt` and `completion` fields.
    pub fn new(stage: &str, data: &Dataset, batch: usize, seed: u64) -> Result<SftObjective, TrainError> {
        let config_err = |message: String| TrainError::Config { stage: stage.to_string(), message };
        if batch == 0 {
            return Err(config_err("`batch` must be at least 1".into()));
        }
        if data.is_empty() {
            return Err(config_err(format!("dataset `{}` has no rows", data.origin)));
        }
        let mut objective = SftObjective {
            stage: stage.to_string(),
            seed,
            batch,
            prompts: data.strings("prompt")?.to_vec(),
            completions: data.strings("completion")?.to_vec(),
            ids: data.ids.clone(),
            epoch: 0,
            pos: 0,
            order: Vec::new(),
        };
        objective.order = objective.epoch_order(0);
        Ok(objective)
    }

    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.prompts.len()).collect();
        Rng::derive(self.seed, &format!("stage/{}/shuffle/{epoch}", self.stage)).shuffle(&mut order);
        order
    }

    /// Epochs completed and position in the current one.
    pub fn position(&self) -> (u64, usize) {
        (self.epoch, self.pos)
    }
}

impl Objective for SftObjective {
    fn next_batch(&mut self, _step: u64, _total: u64) -> Result<Batch, TrainError> {
        let mut batch = Batch::default();
        while batch.rows.len() < self.batch {
            if self.pos == self.order.len() {
                self.epoch += 1;
                self.pos = 0;
                self.order = self.epoch_order(self.epoch);
            }
            let row = self.order[self.pos];
            self.pos += 1;
            batch.rows.push(row);
            batch.example_ids.push(self.ids[row]);
        }
        Ok(batch)
    }

    fn loss(&mut self, model: &CausalLm, batch: &Batch) -> Result<LossOutput, TrainError> {
        let pairs: Vec<(&str, &str)> = batch.rows.iter().map(|&r| (&*self.prompts[r], &*self.completions[r])).collect();
        let tokens_batch = TokenBatch::collate(model.tokenizer(), &pairs, true, model.device())?;
        let loss = model::sft_loss(model, &tokens_batch)?;
        let prompt_tokens =
            pairs.iter().map(|(p, _)| model.tokenizer().encode(p).map(|ids| ids.len())).sum::<Result<usize, _>>()?;
        let tokens = prompt_tokens + tokens_batch.completion_lens.iter().sum::<usize>();
        Ok(LossOutput { loss, tokens, metrics: Vec::new() })
    }

    fn state(&self) -> Value {
        json!({ "epoch": self.epoch, "position": self.pos })
    }

    fn restore(&mut self, state: &Value) -> Result<(), TrainError> {
        let field = |name: &str| state.get(name).and_then(Value::as_u64);
        let (Some(epoch), Some(pos)) = (field("epoch"), field("position")) else {
            return Err(TrainError::Restore {
                stage: self.stage.clone(),
                message: format!("expected {{epoch, position}}, found {state}"),
            });
        };
        if pos as usize > self.prompts.len() {
            return Err(TrainError::Restore {
                stage: self.stage.clone(),
                message: format!("position {pos} is past the dataset's {} rows", self.prompts.len()),
            });
        }
        self.epoch = epoch;
        self.pos = pos as usize;
        self.order = self.epoch_order(epoch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth;

    #[test]
    fn epochs_cover_every_row_once_and_restore_continues() {
        let data = synth::addition(1..=2, 10, 0).unwrap();
        let mut a = SftObjective::new("s", &data, 4, 9).unwrap();
        let drawn: Vec<usize> = (0..5).flat_map(|s| a.next_batch(s, 5).unwrap().rows).collect();
        let mut first_epoch = drawn[..10].to_vec();
        first_epoch.sort_unstable();
        assert_eq!(first_epoch, (0..10).collect::<Vec<_>>());
        assert_ne!(drawn[..10], drawn[10..20], "each epoch has its own order");
        assert_eq!(a.position(), (1, 10));

        let mut b = SftObjective::new("s", &data, 4, 9).unwrap();
        (0..2).for_each(|s| drop(b.next_batch(s, 5).unwrap()));
        let mut c = SftObjective::new("s", &data, 4, 9).unwrap();
        c.restore(&b.state()).unwrap();
        let rest: Vec<usize> = (2..5).flat_map(|s| c.next_batch(s, 5).unwrap().rows).collect();
        assert_eq!(rest, drawn[8..]);
        assert!(c.restore(&json!({"epoch": 0})).is_err());
        assert!(c.restore(&json!({"epoch": 0, "position": 11})).is_err());
    }

    #[test]
    fn needs_prompt_and_completion() {
        let data = synth::addition(1..=1, 3, 0).unwrap().select(&[]);
        assert!(matches!(SftObjective::new("s", &data, 2, 0), Err(TrainError::Config { .. })));
        let data = synth::addition(1..=1, 3, 0).unwrap();
        assert!(matches!(SftObjective::new("s", &data, 0, 0), Err(TrainError::Config { .. })));
    }
}
