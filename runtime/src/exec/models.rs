//! Every model a run's stages name — the policy each trains, a frozen reference — resolved in
//! one place.
//!
//! Invariants: a declaration (`model m = load(...)`) is built or loaded once per run, however
//! many stages read it; a stage trains its own copy, so no stage changes a model another stage
//! reads; a stage's output (model and optimiser) is kept exactly until its last reader has
//! started and then freed, and so is a declared model; a stage's reference is rebuilt from what
//! it names (a declaration or an earlier stage's output), never from the live policy, so a
//! resumed stage scores against the same reference. A stage that trains nothing (`score`) is an
//! alias: its output model is the model it read, so reading `score.model` reads that model.

use super::build::Builder;
use super::ExecError;
use crate::model::{CausalLm, Tokenizer};
use crate::optim::AdamW;
use recipe_compiler::program::Value;
use std::collections::HashMap;

/// What a stage argument of type `Model` names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModelRef {
    /// `model name = ...`.
    Declared(String),
    /// The output of an earlier stage (`sft.model`).
    Stage(String),
}

impl ModelRef {
    /// The model a `Model`-typed argument value names.
    pub fn of(value: &Value) -> Result<ModelRef, ExecError> {
        match value {
            Value::Model(name) => Ok(ModelRef::Declared(name.clone())),
            Value::Stage { stage, .. } => Ok(ModelRef::Stage(stage.clone())),
            other => Err(ExecError::Internal(format!("expected a model, found {other:?}"))),
        }
    }
}

/// A model's tokenizer, context (positions) and vocabulary size (tokens).
#[derive(Clone)]
pub struct Limits {
    pub tokenizer: Tokenizer,
    pub context: usize,
    pub vocab_size: usize,
}

/// A finished stage's model and the optimiser that trained it (for `optimizer = keep`).
pub struct StageOutput {
    pub model: CausalLm,
    pub optim: AdamW,
}

/// The models of a run: declarations built on first use, stage outputs until their last use.
#[derive(Default)]
pub struct ModelStore {
    declared: HashMap<String, CausalLm>,
    outputs: HashMap<String, StageOutput>,
    /// For each model, how many stage starts still read it.
    readers: HashMap<ModelRef, usize>,
    /// Which declaration each stage's output descends from (for its tokenizer and context).
    roots: HashMap<String, String>,
    /// The optimiser of the output the last `start` took (lent to the caller for `keep`).
    taken: Option<AdamW>,
    /// Stages that train nothing, and the model their output is.
    aliases: HashMap<String, ModelRef>,
    /// Each declaration's limits, once known (so asking again never rebuilds a freed model).
    limits: HashMap<String, Limits>,
}

fn missing(stage: &str) -> ExecError {
    ExecError::Internal(format!("the output of stage `{stage}` is not available"))
}

impl ModelStore {
    /// Records that stage `stage` will read `policy` and `reference` (in run order, before it
    /// runs), so each is kept until then and the stage's output inherits `policy`'s tokenizer.
    pub fn register(&mut self, stage: &str, policy: &ModelRef, reference: Option<&ModelRef>) -> Result<(), ExecError> {
        let root = self.root(&self.resolve(policy))?.to_string();
        self.roots.insert(stage.to_string(), root);
        for r in std::iter::once(policy).chain(reference) {
            *self.readers.entry(self.resolve(r)).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Records that stage `stage`, which trains nothing, reads `policy` once (in run order,
    /// before it runs) and that its output model is `policy` itself.
    pub fn register_alias(&mut self, stage: &str, policy: &ModelRef) -> Result<(), ExecError> {
        let policy = self.resolve(policy);
        self.root(&policy)?;
        *self.readers.entry(policy.clone()).or_insert(0) += 1;
        self.aliases.insert(stage.to_string(), policy);
        Ok(())
    }

    /// The model `r` is: `r` itself, or what a stage that trains nothing passed on.
    pub fn resolve(&self, r: &ModelRef) -> ModelRef {
        let mut r = r.clone();
        while let ModelRef::Stage(stage) = &r {
            match self.aliases.get(stage) {
                Some(target) => r = target.clone(),
                None => break,
            }
        }
        r
    }

    /// Counts a read of `r` by a stage that does not need it (restored from a checkpoint).
    pub fn skip(&mut self, r: &ModelRef) {
        self.read(r);
    }

    /// The declaration `r` descends from.
    fn root<'r>(&'r self, r: &'r ModelRef) -> Result<&'r str, ExecError> {
        match r {
            ModelRef::Declared(name) => Ok(name),
            ModelRef::Stage(stage) => self
                .roots
                .get(stage)
                .map(String::as_str)
                .ok_or_else(|| ExecError::Internal(format!("stage `{stage}` has no known model"))),
        }
    }

    /// The declared model `name`, built (or loaded) on first use.
    fn declared(&mut self, builder: &mut Builder<'_>, name: &str) -> Result<&CausalLm, ExecError> {
        if !self.declared.contains_key(name) {
            let model = builder.model(name)?;
            self.declared.insert(name.to_string(), model);
        }
        Ok(&self.declared[name])
    }

    /// What the data a model reads must fit, for the model `r` names, without training
    /// anything: stage outputs share their declaration's.
    pub fn limits(&mut self, builder: &mut Builder<'_>, r: &ModelRef) -> Result<Limits, ExecError> {
        let root = self.root(&self.resolve(r))?.to_string();
        if let Some(limits) = self.limits.get(&root) {
            return Ok(limits.clone());
        }
        let model = self.declared(builder, &root)?;
        let config = model.config();
        let limits = Limits {
            tokenizer: model.tokenizer().clone(),
            context: config.max_position_embeddings,
            vocab_size: config.vocab_size,
        };
        self.limits.insert(root, limits.clone());
        Ok(limits)
    }

    /// A trainable copy of the model `r` names, and the optimiser that trained it when it is a
    /// stage's output. Counts as one read of `r`.
    pub fn start(&mut self, builder: &mut Builder<'_>, r: &ModelRef) -> Result<(CausalLm, Option<&AdamW>), ExecError> {
        let r = &self.resolve(r);
        let last = self.read(r);
        match r {
            ModelRef::Declared(name) => {
                let model = match last {
                    // Nobody else reads the declaration: train it in place of a copy.
                    true => match self.declared.remove(name) {
                        Some(model) => model,
                        None => builder.model(name)?,
                    },
                    false => self.declared(builder, name)?.snapshot()?,
                };
                Ok((model, None))
            }
            ModelRef::Stage(stage) if last => {
                // The last reader takes the output itself (its optimiser moves with it).
                let out = self.outputs.remove(stage).ok_or_else(|| missing(stage))?;
                self.taken = Some(out.optim);
                Ok((out.model, self.taken.as_ref()))
            }
            ModelRef::Stage(stage) => {
                let out = self.output(stage)?;
                Ok((out.model.snapshot()?, Some(&out.optim)))
            }
        }
    }

    /// A frozen copy of the model `r` names (a reference). Counts as one read of `r`; the last
    /// reader freezes the model itself instead of a copy.
    pub fn frozen(&mut self, builder: &mut Builder<'_>, r: &ModelRef) -> Result<CausalLm, ExecError> {
        let r = &self.resolve(r);
        let last = self.read(r);
        match r {
            ModelRef::Declared(name) if last => match self.declared.remove(name) {
                Some(model) => Ok(model.into_frozen()),
                None => Ok(builder.model(name)?.into_frozen()),
            },
            ModelRef::Declared(name) => Ok(self.declared(builder, name)?.frozen()?),
            ModelRef::Stage(stage) if last => {
                Ok(self.outputs.remove(stage).ok_or_else(|| missing(stage))?.model.into_frozen())
            }
            ModelRef::Stage(stage) => Ok(self.output(stage)?.model.frozen()?),
        }
    }

    /// Whether a later stage reads stage `stage`'s output.
    pub fn is_read_later(&self, stage: &str) -> bool {
        self.readers.get(&ModelRef::Stage(stage.to_string())).is_some_and(|&n| n > 0)
    }

    /// Keeps stage `stage`'s output while a later stage reads it; frees it otherwise.
    pub fn finish(&mut self, stage: &str, output: StageOutput) {
        if self.is_read_later(stage) {
            self.outputs.insert(stage.to_string(), output);
        }
    }

    /// Frees whatever no later stage reads (after a round of `start`/`frozen` calls).
    pub fn release_unread(&mut self) {
        let readers = &self.readers;
        let unread = |r: ModelRef| readers.get(&r).is_none_or(|&n| n == 0);
        self.declared.retain(|name, _| !unread(ModelRef::Declared(name.clone())));
        self.outputs.retain(|stage, _| !unread(ModelRef::Stage(stage.clone())));
    }

    fn output(&self, stage: &str) -> Result<&StageOutput, ExecError> {
        self.outputs.get(stage).ok_or_else(|| missing(stage))
    }

    /// Counts one read of `r`; whether it was the last.
    fn read(&mut self, r: &ModelRef) -> bool {
        let n = self.readers.entry(self.resolve(r)).or_insert(1);
        *n = n.saturating_sub(1);
        *n == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage that trains nothing passes its model on: reading its output reads that model,
    /// through chains of such stages, and each reader counts once on the model itself.
    #[test]
    fn aliases_resolve_to_the_model_read() {
        let mut store = ModelStore::default();
        let m = ModelRef::Declared("m".into());
        store.register_alias("a", &m).unwrap();
        store.register_alias("b", &ModelRef::Stage("a".into())).unwrap();
        store.register("train", &ModelRef::Stage("b".into()), None).unwrap();
        assert_eq!(store.resolve(&ModelRef::Stage("b".into())), m);
        assert_eq!(store.resolve(&ModelRef::Stage("train".into())), ModelRef::Stage("train".into()));
        assert_eq!(store.readers.get(&m), Some(&3));
        assert!(!store.read(&ModelRef::Stage("a".into())));
        assert!(!store.read(&m));
        assert!(store.read(&ModelRef::Stage("b".into())), "the third read is the last");
        assert_eq!(store.roots.get("train").map(String::as_str), Some("m"));
    }
}
