//! Every model a run's stages name — the policy each trains, a frozen reference — resolved in
//! one place.
//!
//! Invariants: a declaration (`model m = load(...)`) is built or loaded once per run, however
//! many stages read it; a stage trains its own copy, so no stage changes a model another stage
//! reads; a stage's output (model and optimiser) is kept exactly until its last reader has
//! started and then freed, and so is a declared model; a stage's reference is rebuilt from what
//! it names (a declaration or an earlier stage's output), never from the live policy, so a
//! resumed stage scores against the same reference. A stage that trains nothing (`score`) is an
//! alias: its output model is the model it read, so reading `score.model` reads that model. A
//! stage that runs in rounds reads models once per round: round 0 what the stage names, round r
//! its round r − 1's output ([`ModelRef::Round`]) as policy — and as reference when the stage
//! re-binds it — so a round's output lives exactly until the next round has started. A stage
//! inside a `rounds` block names its output of each round the same way (`Round`, `Stage` in the
//! last round), and the block's name is an alias of its last round's output.
//!
//! Every `ModelRef` the store is given is first resolved through the aliases ([`ModelStore::resolve`]),
//! so reader counts, outputs and roots are kept on the model itself: a `Stage` of a stage that
//! trains, a `Round`, or a `Declared`.

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
    /// The output of an earlier stage (`sft.model`); of its last round, for a stage in rounds.
    Stage(String),
    /// The output of round `round` (0-based) of a stage that runs in rounds, read by its next
    /// round.
    Round { stage: String, round: u32 },
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
    /// Outputs of stages ([`ModelRef::Stage`]) and of rounds ([`ModelRef::Round`]).
    outputs: HashMap<ModelRef, StageOutput>,
    /// For each model, how many stage starts still read it.
    readers: HashMap<ModelRef, usize>,
    /// Which declaration each stage's output descends from (for its tokenizer and context).
    roots: HashMap<String, String>,
    /// The optimiser of the output the last `start` took (lent to the caller for `keep`).
    taken: Option<AdamW>,
    /// Outputs that are another model: of stages that train nothing (the model they read) and
    /// of `rounds` blocks (their last round's output).
    aliases: HashMap<ModelRef, ModelRef>,
    /// Each declaration's limits, once known (so asking again never rebuilds a freed model).
    limits: HashMap<String, Limits>,
}

fn missing(r: &ModelRef) -> ExecError {
    ExecError::Internal(format!("the output {r:?} is not available"))
}

impl ModelStore {
    /// Records that stage `stage` will read `policy` and `reference` (in run order, before it
    /// runs), so each is kept until then and the stage's output inherits `policy`'s tokenizer.
    pub fn register(&mut self, stage: &str, policy: &ModelRef, reference: Option<&ModelRef>) -> Result<(), ExecError> {
        let root = self.root(&self.resolve(policy))?.to_string();
        self.roots.insert(stage.to_string(), root);
        for r in std::iter::once(policy).chain(reference) {
            self.add_reader(r);
        }
        Ok(())
    }

    /// Records the reads of stage `stage` that runs in `rounds` rounds: round 0 reads `policy`
    /// and `reference` (as [`ModelStore::register`]); round r > 0 reads round r − 1's output as
    /// its policy, and as its reference too when `rebind_reference` (else `reference` again).
    /// One read per round.
    pub fn register_rounds(
        &mut self,
        stage: &str,
        policy: &ModelRef,
        reference: Option<&ModelRef>,
        rounds: u32,
        rebind_reference: bool,
    ) -> Result<(), ExecError> {
        self.register(stage, policy, reference)?;
        for round in 1..rounds {
            let previous = ModelRef::Round { stage: stage.to_string(), round: round - 1 };
            let reference = reference.map(|r| if rebind_reference { previous.clone() } else { r.clone() });
            for r in std::iter::once(&previous).chain(reference.as_ref()) {
                self.add_reader(r);
            }
        }
        Ok(())
    }

    /// Records that the stage whose output is `output` (`Stage`, or `Round` inside a `rounds`
    /// block), which trains nothing, reads `policy` once (in run order, before it runs) and that
    /// its output model is `policy` itself.
    pub fn register_alias(&mut self, output: ModelRef, policy: &ModelRef) -> Result<(), ExecError> {
        self.alias(output, policy)?;
        self.add_reader(policy);
        Ok(())
    }

    /// Records that reading `output` reads the model `target` is, without reading it (a
    /// `rounds` block's output is its last round's).
    pub fn alias(&mut self, output: ModelRef, target: &ModelRef) -> Result<(), ExecError> {
        let target = self.resolve(target);
        self.root(&target)?;
        self.aliases.insert(output, target);
        Ok(())
    }

    /// Counts one more reader of the model `r` is.
    fn add_reader(&mut self, r: &ModelRef) {
        *self.readers.entry(self.resolve(r)).or_insert(0) += 1;
    }

    /// The model `r` is: `r` itself, or what a stage that trains nothing (or a `rounds` block)
    /// passed on.
    pub fn resolve(&self, r: &ModelRef) -> ModelRef {
        let mut r = r.clone();
        while let Some(target) = self.aliases.get(&r) {
            r = target.clone();
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
            ModelRef::Stage(stage) | ModelRef::Round { stage, .. } => self
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
            output if last => {
                // The last reader takes the output itself (its optimiser moves with it).
                let out = self.outputs.remove(output).ok_or_else(|| missing(output))?;
                self.taken = Some(out.optim);
                Ok((out.model, self.taken.as_ref()))
            }
            output => {
                let out = self.output(output)?;
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
            output if last => Ok(self.outputs.remove(output).ok_or_else(|| missing(output))?.model.into_frozen()),
            output => Ok(self.output(output)?.model.frozen()?),
        }
    }

    /// Whether a stage (or round) still to start reads the model `r` is.
    pub fn is_read(&self, r: &ModelRef) -> bool {
        self.readers.get(&self.resolve(r)).is_some_and(|&n| n > 0)
    }

    /// Keeps the output `r` (a training stage's or a round's) while a later reader reads it;
    /// frees it otherwise.
    pub fn finish_output(&mut self, r: ModelRef, output: StageOutput) {
        if self.is_read(&r) {
            self.outputs.insert(r, output);
        }
    }

    /// Frees whatever no later stage reads (after a round of `start`/`frozen` calls).
    pub fn release_unread(&mut self) {
        let readers = &self.readers;
        let unread = |r: ModelRef| readers.get(&r).is_none_or(|&n| n == 0);
        self.declared.retain(|name, _| !unread(ModelRef::Declared(name.clone())));
        self.outputs.retain(|r, _| !unread(r.clone()));
    }

    fn output(&self, r: &ModelRef) -> Result<&StageOutput, ExecError> {
        self.outputs.get(r).ok_or_else(|| missing(r))
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
        store.register_alias(ModelRef::Stage("a".into()), &m).unwrap();
        store.register_alias(ModelRef::Stage("b".into()), &ModelRef::Stage("a".into())).unwrap();
        store.register("train", &ModelRef::Stage("b".into()), None).unwrap();
        assert_eq!(store.resolve(&ModelRef::Stage("b".into())), m);
        assert_eq!(store.resolve(&ModelRef::Stage("train".into())), ModelRef::Stage("train".into()));
        assert_eq!(store.readers.get(&m), Some(&3));
        assert!(!store.read(&ModelRef::Stage("a".into())));
        assert!(!store.read(&m));
        assert!(store.read(&ModelRef::Stage("b".into())), "the third read is the last");
        assert_eq!(store.roots.get("train").map(String::as_str), Some("m"));
    }

    /// One read per round: round 0 reads what the stage names; round r > 0 reads round r − 1's
    /// output as policy, and as reference too when it re-binds it.
    #[test]
    fn rounds_count_one_read_per_round() {
        let (m, r) = (ModelRef::Declared("m".into()), ModelRef::Declared("r".into()));
        let round = |i| ModelRef::Round { stage: "dpo".into(), round: i };
        let reads = |store: &ModelStore, x: &ModelRef| store.readers.get(x).copied().unwrap_or(0);

        let mut rebound = ModelStore::default();
        rebound.register_rounds("dpo", &m, Some(&r), 3, true).unwrap();
        assert_eq!([&m, &r, &round(0), &round(1), &round(2)].map(|x| reads(&rebound, x)), [1, 1, 2, 2, 0]);

        let mut kept = ModelStore::default();
        kept.register_rounds("dpo", &m, Some(&r), 3, false).unwrap();
        assert_eq!([&m, &r, &round(0), &round(1)].map(|x| reads(&kept, x)), [1, 3, 1, 1]);

        // Without a reference (`sft`) re-binding changes nothing.
        let mut sft = ModelStore::default();
        sft.register_rounds("s", &m, None, 2, true).unwrap();
        let first = ModelRef::Round { stage: "s".into(), round: 0 };
        assert_eq!((reads(&sft, &m), reads(&sft, &first)), (1, 1));
        sft.skip(&first);
        assert!(!sft.is_read(&first), "read once, by the next round");
    }

    /// A stage in rounds that reads a transform's output (`score.model`) counts every round's
    /// read of it on the model the transform read, and its rounds descend from that model.
    #[test]
    fn rounds_read_through_aliases() {
        let m = ModelRef::Declared("m".into());
        let scored = ModelRef::Stage("scored".into());
        let mut store = ModelStore::default();
        store.register_alias(scored.clone(), &m).unwrap();
        store.register_rounds("dpo", &scored, Some(&scored), 3, false).unwrap();
        // The transform's read, round 0's policy, and the reference of each of the 3 rounds.
        assert_eq!(store.readers.get(&m), Some(&5));
        assert_eq!(store.readers.get(&scored), None, "an alias holds no reads of its own");
        assert!(store.is_read(&scored));
        let round = ModelRef::Round { stage: "dpo".into(), round: 1 };
        assert_eq!(store.root(&round).unwrap(), "m");
        assert_eq!(store.resolve(&round), round);
        for _ in 0..4 {
            assert!(!store.read(&scored));
        }
        assert!(store.read(&scored), "the fifth read is the last");
    }

    /// In a `rounds` block a transform's output of round r is an alias of what it read that
    /// round, and the block's name an alias of its last round's output (read without a read of
    /// its own): reads through either count on the model itself.
    #[test]
    fn block_rounds_alias_their_transforms_and_the_block() {
        let (sft, dpo) = (ModelRef::Stage("sft".into()), ModelRef::Stage("dpo".into()));
        let round = |stage: &str, i| ModelRef::Round { stage: stage.into(), round: i };
        let mut store = ModelStore::default();
        store.register("sft", &ModelRef::Declared("m".into()), None).unwrap();
        store.register_alias(round("pairs", 0), &sft).unwrap();
        store.register("dpo", &sft, Some(&sft)).unwrap();
        store.register_alias(ModelRef::Stage("pairs".into()), &round("dpo", 0)).unwrap();
        store.register("dpo", &round("dpo", 0), Some(&round("dpo", 0))).unwrap();
        store.alias(ModelRef::Stage("block".into()), &dpo).unwrap();
        store.register("after", &ModelRef::Stage("block".into()), None).unwrap();
        assert_eq!(store.resolve(&round("pairs", 0)), sft);
        assert_eq!(store.resolve(&ModelRef::Stage("pairs".into())), round("dpo", 0));
        assert_eq!(store.resolve(&ModelRef::Stage("block".into())), dpo);
        let reads = |x: &ModelRef| store.readers.get(x).copied().unwrap_or(0);
        assert_eq!([&sft, &round("dpo", 0), &dpo].map(reads), [3, 3, 1]);
        assert_eq!(store.root(&store.resolve(&ModelRef::Stage("block".into()))).unwrap(), "m");
    }
}
