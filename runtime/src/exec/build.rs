//! Building the values a program declares: models (`tiny_lm`, `load`) and datasets (`synth.*`,
//! `jsonl`, `split`, `take`, `filter`, `map`, `all_pairs`, `best_worst_pairs`, `perturb`). Each
//! declaration is built once, on first use, and cached by name; file paths resolve against the
//! recipe's folder and the data roots only.
//!
//! Data a stage produces (`score.data`) is held here too, under the stage's name: before compute
//! its preview (the rows it may produce, for checks), then the rows it produced. A dataset built
//! from stage data is never cached, so it is rebuilt from whichever of the two is current.

use super::args::{Call, Constant, Functions};
use super::ExecError;
use crate::artifact::{FileDigest, SkippedRows};
use crate::data::{jsonl, pairs, perturb, synth, BadRowPolicy, Dataset, FieldType, Schema};
use crate::model::{CausalLm, Device, LlamaConfig};
use crate::rng::Rng;
use recipe_compiler::batch;
use recipe_compiler::column::Column;
use recipe_compiler::program::{Decl, FieldKind, Program, RowSchema, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The model builtins [`Builder::model`] builds.
pub const MODEL_BUILTINS: &[&str] = &["tiny_lm", "load"];

/// The data builtins [`Builder::dataset`] builds.
pub const DATA_BUILTINS: &[&str] = &[
    "synth.addition",
    "synth.multiplication",
    "synth.reverse",
    "synth.chain",
    "synth.rated_responses",
    "jsonl",
    "take",
    "split",
    "filter",
    "map",
    "all_pairs",
    "best_worst_pairs",
    "perturb",
];

/// Models and datasets built so far, plus every input file's digest for the lock.
pub struct Builder<'p> {
    pub program: &'p Program,
    pub device: Device,
    pub seed: u64,
    /// Folders a recipe may read: its own folder first, then `--data-root`s.
    pub roots: Vec<PathBuf>,
    pub functions: Arc<Functions>,
    datasets: HashMap<String, Dataset>,
    /// Data produced by stages, by stage name: a preview before the stage ran, then its rows.
    stage_data: HashMap<String, Dataset>,
    pub inputs: Vec<FileDigest>,
    /// Rows skipped by `on_error = skip`, per dataset, for the run summary.
    pub skipped: Vec<SkippedRows>,
}

impl<'p> Builder<'p> {
    pub fn new(program: &'p Program, device: Device, roots: Vec<PathBuf>, functions: Arc<Functions>) -> Builder<'p> {
        Builder {
            program,
            device,
            seed: program.seed as u64,
            roots,
            functions,
            datasets: HashMap::new(),
            stage_data: HashMap::new(),
            inputs: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// The model declared as `model name = ...`, freshly built (stages train their own copy).
    ///
    /// Errors: a bad configuration or an unreadable folder, located at the declaration.
    pub fn model(&mut self, name: &str) -> Result<CausalLm, ExecError> {
        let call = Call::of_decl(self.program, name)?;
        match call.name {
            "tiny_lm" => {
                let d_model = call.count("d_model")? as usize;
                let heads = call.count("heads")? as usize;
                let kv_heads = match call.count("kv_heads")? as usize {
                    0 => heads,
                    n => n,
                };
                // SwiGLU keeps the parameter count of a 4x MLP at 8/3 x, rounded to 16.
                let ffn = match call.count("ffn")? as usize {
                    0 => (d_model * 8 / 3).div_ceil(16) * 16,
                    n => n,
                };
                let cfg = LlamaConfig {
                    // The 256 bytes and the embedded tokenizer's EOS.
                    vocab_size: crate::model::tokenizer::BYTES_EOS as usize + 1,
                    hidden_size: d_model,
                    intermediate_size: ffn,
                    num_hidden_layers: call.count("layers")? as usize,
                    num_attention_heads: heads,
                    num_key_value_heads: kv_heads,
                    max_position_embeddings: call.count("context")? as usize,
                    ..LlamaConfig::default()
                };
                cfg.validate()
                    .map_err(|message| call.locate(ExecError::Config(format!("model `{name}`: {message}")), None))?;
                let mut rng = Rng::derive(self.seed, &format!("model/{name}/init"));
                Ok(CausalLm::tiny(cfg, &mut rng, &self.device)?)
            }
            "load" => {
                let dir = self.resolve(call.str("path")?).map_err(|e| call.locate(e, Some("path")))?;
                let model = CausalLm::load(&dir, &self.device).map_err(|e| call.locate(e.into(), Some("path")))?;
                for digest in FileDigest::of_dir(&dir).map_err(|e| ExecError::io(&dir, e))? {
                    self.record(digest);
                }
                Ok(model)
            }
            other => Err(ExecError::Unsupported(format!("model builtin `{other}`"))),
        }
    }

    /// The dataset a `Value::Data` names, or an inline dataset call.
    pub fn dataset(&mut self, value: &Value) -> Result<Dataset, ExecError> {
        match value {
            Value::Data(name) => {
                if let Some(d) = self.datasets.get(name) {
                    return Ok(d.clone());
                }
                let decl = self
                    .program
                    .decl(name)
                    .ok_or_else(|| ExecError::Internal(format!("no data declaration `{name}`")))?;
                let data = self
                    .build_dataset(&decl.value, Layout::of(Some(decl)))
                    .map_err(|e| e.in_recipe(self.program, name, None))?;
                if !reads_stage_data(self.program, &decl.value) {
                    self.datasets.insert(name.clone(), data.clone());
                }
                Ok(data)
            }
            Value::Call { .. } => self.build_dataset(value, Layout::Prompt),
            Value::Stage { stage, field } if field.as_deref() == Some("data") => {
                self.stage_data.get(stage).cloned().ok_or_else(|| {
                    ExecError::Internal(format!("the data of stage `{stage}` is read before the stage is bound"))
                })
            }
            other => Err(ExecError::Internal(format!("expected a dataset, found {other:?}"))),
        }
    }

    /// Records `data` as what stage `stage` produces (its preview before it runs, then its rows).
    pub fn set_stage_data(&mut self, stage: &str, data: Dataset) {
        self.stage_data.insert(stage.to_string(), data);
    }

    /// The `dataset` argument of a data builtin, an inline source in it read with the row layout
    /// `layout` (`take`, `split` and `filter` keep the row type, so theirs is the whole
    /// expression's).
    fn source(&mut self, call: &Call<'_>, layout: Layout) -> Result<Dataset, ExecError> {
        match call.get("dataset")? {
            inline @ Value::Call { .. } => self.build_dataset(inline, layout),
            named => self.dataset(named),
        }
    }

    /// `layout` is what an inline `jsonl(...)` in `value` reads: the row type of the `data`
    /// declaration `value` belongs to (prompt/completion outside any declaration), or the input
    /// row type of the builtin it is an argument of.
    fn build_dataset(&mut self, value: &Value, layout: Layout) -> Result<Dataset, ExecError> {
        let call = Call::of(value)?;
        let seeded = |call: &Call<'_>| -> Result<(usize, u64), ExecError> {
            Ok((call.count("count")? as usize, call.int("seed")? as u64))
        };
        let data = match call.name {
            "synth.addition" => {
                let (count, seed) = seeded(&call)?;
                synth::addition(call.range("digits")?, count, seed)?
            }
            "synth.multiplication" => {
                let (count, seed) = seeded(&call)?;
                synth::multiplication(call.range("digits")?, count, seed)?
            }
            "synth.reverse" => {
                let (count, seed) = seeded(&call)?;
                synth::reverse(call.range("length")?, count, seed)?
            }
            "synth.chain" => {
                let (count, seed) = seeded(&call)?;
                synth::chain(call.range("steps")?, count, seed)?
            }
            "synth.rated_responses" => {
                let (count, seed) = seeded(&call)?;
                let responses = call.count("responses")? as usize;
                synth::rated_responses(call.range("digits")?, count, responses, seed)?
            }
            "jsonl" => {
                let written = call.str("path")?;
                let path = self.resolve(written)?;
                let schema = match layout {
                    Layout::Prompt => Schema::prompt_completion(),
                    Layout::Row(row) => jsonl_schema(&row)?,
                    Layout::NotRecord(ty) => {
                        return Err(ExecError::Config(format!("`jsonl` needs a record row type, found `{ty}`")))
                    }
                };
                let (data, report) = jsonl::read_jsonl(&path, &schema, call.constant("on_error")?)?;
                for digest in &data.sources {
                    self.record(digest.clone());
                }
                if report.skipped > 0 {
                    let (file, count, lines) = (written.to_string(), report.skipped, report.skipped_lines);
                    self.skipped.push(SkippedRows { file, count, lines });
                }
                data
            }
            "take" => {
                let data = self.source(&call, layout)?;
                let n = (call.count("count")? as usize).min(data.len());
                data.select(&(0..n).collect::<Vec<_>>())
            }
            "split" => {
                let data = self.source(&call, layout)?;
                let fraction = call.float("fraction")?;
                if !(0.0..=1.0).contains(&fraction) {
                    return Err(ExecError::Config(format!("`split`: fraction must be in [0, 1], got {fraction}")));
                }
                // Split the distinct prompts, so a prompt seen in training is never held out.
                let mut rng = Rng::derive(call.int("seed")? as u64, "data/split");
                let (train, held) = data.split_by_key("prompt", 1.0 - fraction, &mut rng)?;
                if call.bool("rest")? {
                    held
                } else {
                    train
                }
            }
            "filter" => {
                let data = self.source(&call, layout)?;
                let Value::Scalar(index) = call.get("keep")? else {
                    return Err(ExecError::Internal("`filter`: `keep` is not a scalar function".into()));
                };
                let func = self.functions.func(*index)?;
                let columns: Vec<(&str, &Column)> = data.columns.iter().map(|(n, c)| (n.as_str(), c)).collect();
                let keep =
                    batch::eval_batch(func, &columns).map_err(|e| ExecError::Config(format!("`filter`: {e}")))?;
                let Column::Bool(keep) = keep else {
                    return Err(ExecError::Internal("`filter`: `keep` did not return Bool".into()));
                };
                let rows: Vec<usize> = keep.iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| i).collect();
                data.select(&rows)
            }
            "map" => self.map(&call)?,
            "all_pairs" => {
                let data = self.source(&call, Layout::rated())?;
                let cap = call.count("max_per_prompt")?;
                if cap == 0 {
                    return Err(call.invalid("max_per_prompt", "must be at least 1"));
                }
                pairs::all_pairs(&data, cap as usize)?
            }
            "best_worst_pairs" => pairs::best_worst_pairs(&self.source(&call, Layout::rated())?)?,
            "perturb" => {
                // The input rows are the output's without the two fields `perturb` adds.
                let data = self.source(&call, layout.without(&["perturbed", "strength"]))?;
                perturb::perturb(&data, call.range("strength")?, call.int("seed")? as u64)?
            }
            other => return Err(ExecError::Unsupported(format!("data builtin `{other}`"))),
        };
        Ok(data)
    }

    /// `map(dataset, f)`: each field function of `f` (one per output field, see
    /// `recipe_compiler::lower::row_fields`) evaluated over the input's columns by the JIT. Rows
    /// keep their ids and sources; a field whose function returns `Messages` is a conversation
    /// column. An inline source reads the fields the functions read.
    fn map(&mut self, call: &Call<'_>) -> Result<Dataset, ExecError> {
        let Value::Record(fields) = call.get("f")? else {
            return Err(ExecError::Internal("`map`: `f` is not a record of scalar functions".into()));
        };
        let mut funcs = Vec::with_capacity(fields.len());
        for (field, value) in fields {
            let Value::Scalar(index) = value else {
                return Err(ExecError::Internal(format!("`map`: field `{field}` is not a scalar function")));
            };
            funcs.push((field.as_str(), *index));
        }
        let read: Vec<(String, FieldKind)> = match funcs.first() {
            Some((_, index)) => {
                self.functions.func(*index)?.function().params.iter().map(|p| (p.name.clone(), kind_of(p.ty))).collect()
            }
            None => Vec::new(),
        };
        let data = self.source(call, Layout::Row(RowSchema { fields: read }))?;
        let inputs: Vec<(&str, &Column)> = data.columns.iter().map(|(n, c)| (n.as_str(), c)).collect();
        let mut columns = Vec::with_capacity(funcs.len());
        let mut conversations = Vec::new();
        for (field, index) in funcs {
            let func = self.functions.func(index)?;
            let column = batch::eval_batch(func, &inputs)
                .map_err(|e| ExecError::Config(format!("`map`: field `{field}`: {e}")))?;
            if self.program.functions.get(index as usize).is_some_and(|f| f.ret == "Messages") {
                conversations.push(field);
            }
            columns.push((field.to_string(), column));
        }
        let mut out =
            Dataset::new(format!("map({})", data.origin), data.ids.clone(), columns)?.with_messages(&conversations)?;
        out.sources = data.sources.clone();
        Ok(out)
    }

    fn record(&mut self, digest: FileDigest) {
        if !self.inputs.iter().any(|d| d.path == digest.path) {
            self.inputs.push(digest);
        }
    }

    /// A relative path against the roots (first existing wins); absolute paths must lie inside
    /// a root. Nothing outside the recipe's folder and the data roots is read.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, ExecError> {
        let p = Path::new(path);
        let candidates: Vec<PathBuf> =
            if p.is_absolute() { vec![p.to_path_buf()] } else { self.roots.iter().map(|r| r.join(p)).collect() };
        for c in &candidates {
            if let Ok(canonical) = c.canonicalize() {
                let inside = self.roots.iter().any(|r| r.canonicalize().is_ok_and(|r| canonical.starts_with(r)));
                if inside {
                    return Ok(canonical);
                }
                return Err(ExecError::Input(format!(
                    "`{path}` lies outside the recipe's folder and the data roots (add --data-root)"
                )));
            }
        }
        let searched: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        Err(ExecError::Input(format!("`{path}` not found (searched {})", searched.join(", "))))
    }
}

impl Constant for BadRowPolicy {
    const TYPE: &'static str = "OnError";

    fn from_name(name: &str) -> Option<BadRowPolicy> {
        match name {
            "skip" => Some(BadRowPolicy::Skip),
            "fail" => Some(BadRowPolicy::Fail),
            _ => None,
        }
    }
}

/// The row layout an inline `jsonl` source reads (see [`Builder::build_dataset`]).
enum Layout {
    /// TRL's prompt/completion (a source outside any `data` declaration).
    Prompt,
    /// A record row type.
    Row(RowSchema),
    /// A declaration whose type has no record rows (an error if `jsonl` is asked to read it).
    NotRecord(String),
}

impl Layout {
    fn of(declared: Option<&Decl>) -> Layout {
        match declared {
            None => Layout::Prompt,
            Some(Decl { row: Some(row), .. }) => Layout::Row(row.clone()),
            Some(decl) => Layout::NotRecord(decl.ty.clone()),
        }
    }

    /// `Rated` (stdlib/builtins.recipe), the input of the pair builders.
    fn rated() -> Layout {
        let field = |name: &str, kind: FieldKind| (name.to_string(), kind);
        Layout::Row(RowSchema {
            fields: vec![
                field("answer", FieldKind::Str),
                field("digits", FieldKind::Int),
                field("prompt", FieldKind::Str),
                field("rating", FieldKind::Float),
                field("response", FieldKind::Str),
            ],
        })
    }

    /// This row layout without the fields `names`.
    fn without(self, names: &[&str]) -> Layout {
        match self {
            Layout::Row(row) => Layout::Row(RowSchema {
                fields: row.fields.into_iter().filter(|(n, _)| !names.contains(&n.as_str())).collect(),
            }),
            other => other,
        }
    }
}

/// Whether `value` reads data a stage produces (`score.data`), directly or through `data`
/// declarations: such a dataset changes when the stage has run, so it is not cached.
pub fn reads_stage_data(program: &Program, value: &Value) -> bool {
    !stage_data_read_by(program, value).is_empty()
}

/// The stages whose data (`score.data`) `value` reads, directly or through `data` declarations,
/// each once, in the order first reached.
pub fn stage_data_read_by(program: &Program, value: &Value) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        match v {
            Value::Stage { stage, field } if field.as_deref() == Some("data") && !stages.contains(stage) => {
                stages.push(stage.clone())
            }
            Value::Data(name) if seen.insert(name.as_str()) => pending.extend(program.decl(name).map(|d| &d.value)),
            Value::Call { args, .. } => pending.extend(args.iter().rev().map(|(_, v)| v)),
            Value::List(items) => pending.extend(items.iter().rev()),
            Value::Record(fields) => pending.extend(fields.iter().rev().map(|(_, v)| v)),
            _ => {}
        }
    }
    stages
}

/// The row field kind of a row function's parameter (a conversation parameter reads as text).
fn kind_of(ty: recipe_compiler::ir::Ty) -> FieldKind {
    match ty {
        recipe_compiler::ir::Ty::Int => FieldKind::Int,
        recipe_compiler::ir::Ty::Float => FieldKind::Float,
        recipe_compiler::ir::Ty::Bool => FieldKind::Bool,
        recipe_compiler::ir::Ty::Str => FieldKind::Str,
    }
}

/// The JSONL schema of a declared row type: the scalar fields a data file can hold.
fn jsonl_schema(row: &RowSchema) -> Result<Schema, ExecError> {
    let field = |(name, kind): &(String, FieldKind)| {
        let ty = match kind {
            FieldKind::Str => FieldType::Str,
            FieldKind::Int => FieldType::Int,
            FieldKind::Float => FieldType::Float,
            FieldKind::Bool => FieldType::Bool,
            FieldKind::Messages => FieldType::Messages,
            FieldKind::Other(ty) => {
                return Err(ExecError::Config(format!(
                    "JSONL field `{name}` has type `{ty}`; rows may hold String, Int, Float, Bool or Messages"
                )))
            }
        };
        Ok((name.clone(), ty))
    };
    Ok(Schema { fields: row.fields.iter().map(field).collect::<Result<_, _>>()? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use recipe_compiler::diag::Source;

    fn row(fields: &[(&str, FieldKind)]) -> RowSchema {
        RowSchema { fields: fields.iter().map(|(n, k)| (n.to_string(), k.clone())).collect() }
    }

    #[test]
    fn jsonl_schema_keeps_scalar_fields_in_order() {
        let row = row(&[
            ("label", FieldKind::Bool),
            ("n", FieldKind::Int),
            ("prompt", FieldKind::Str),
            ("w", FieldKind::Float),
        ]);
        let expected = Schema::new([
            ("label", FieldType::Bool),
            ("n", FieldType::Int),
            ("prompt", FieldType::Str),
            ("w", FieldType::Float),
        ]);
        assert_eq!(jsonl_schema(&row).unwrap(), expected);
    }

    #[test]
    fn jsonl_schema_rejects_a_non_scalar_field_by_name_and_type() {
        let row = row(&[("prompt", FieldKind::Str), ("tags", FieldKind::Other("List[String]".into()))]);
        match jsonl_schema(&row) {
            Err(ExecError::Config(message)) => {
                assert!(message.contains("`tags`") && message.contains("`List[String]`"), "{message}")
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    /// Every name in `DATA_BUILTINS` has a build arm: a recipe calling each one builds.
    #[test]
    fn every_data_builtin_builds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rows.jsonl"), "{\"prompt\": \"1+2=\", \"completion\": \"3\"}\n").unwrap();
        let rated = "{\"prompt\": \"p\", \"answer\": \"1\", \"response\": \"1\", \"rating\": 1, \"digits\": 1}\n\
                     {\"prompt\": \"p\", \"answer\": \"1\", \"response\": \"2\", \"rating\": 0.5, \"digits\": 1}\n";
        std::fs::write(dir.path().join("rated.jsonl"), rated).unwrap();
        let recipe = "recipe \"t\" { seed = 1 }\n\
                      model m = tiny_lm()\n\
                      data add = synth.addition(count = 8)\n\
                      data mul = synth.multiplication(count = 8)\n\
                      data rev = synth.reverse(count = 8)\n\
                      data chain = synth.chain(count = 8)\n\
                      data rated = synth.rated_responses(count = 8)\n\
                      data rows: Dataset[{prompt: String, completion: String}] = jsonl(\"rows.jsonl\")\n\
                      data first = take(add, 2)\n\
                      data most = split(add)\n\
                      data short = filter(add, keep = |r| r.digits < 2)\n\
                      data all = all_pairs(rated)\n\
                      data best = best_worst_pairs(rated)\n\
                      data edited = perturb(add)\n\
                      data file_pairs = all_pairs(jsonl(\"rated.jsonl\"))\n\
                      data file_edited = perturb(take(rows, 1))\n\
                      data mapped = map(add, |r| {prompt: user(r.prompt), completion: r.completion, d: r.digits})\n\
                      stage s = sft(m, add)\n\
                      run s\n";
        let program = recipe_compiler::compile(&Source::new("t.recipe", recipe), &[])
            .unwrap_or_else(|e| panic!("{:?}", e.iter().map(|d| &d.message).collect::<Vec<_>>()));
        let functions = Arc::new(Functions::new(&program.scalar).unwrap());
        let mut builder = Builder::new(&program, Device::Cpu, vec![dir.path().to_path_buf()], functions);
        for name in DATA_BUILTINS {
            let decl = program
                .decls
                .iter()
                .find(|d| d.value.call_name() == Some(name))
                .unwrap_or_else(|| panic!("the test recipe does not call `{name}`"));
            let data = builder.dataset(&Value::Data(decl.name.clone())).unwrap_or_else(|e| panic!("`{name}`: {e}"));
            assert!(!data.is_empty(), "`{name}` built no rows");
        }
        // An inline source is read with the row type its builtin takes.
        let pairs = builder.dataset(&Value::Data("file_pairs".into())).unwrap();
        assert_eq!(pairs.strings("chosen").unwrap()[0].as_ref(), "1");
        let edited = builder.dataset(&Value::Data("file_edited".into())).unwrap();
        assert_eq!(edited.ids, vec![1]);
        assert!(edited.column("completion").is_some() && edited.column("strength").is_some());
    }

    /// `map` computes each output field over the input columns: rows keep their ids and file
    /// digests, a `Messages` field is a conversation column, and an inline source reads the
    /// fields the function reads.
    #[test]
    fn map_builds_rows_from_rows() {
        let dir = tempfile::tempdir().unwrap();
        let rows = "{\"question\": \"Tom has 3 \\\"apples\\\".\", \"answer\": \"3+4=7\\n#### 7\"}\n\n\
                    {\"question\": \"Zoé?\", \"answer\": \"#### 72\", \"extra\": 1}\n";
        std::fs::write(dir.path().join("gsm.jsonl"), rows).unwrap();
        let recipe = "recipe \"t\" { seed = 1 }\n\
                      model m = tiny_lm()\n\
                      data gsm: Dataset[{question: String, answer: String}] = jsonl(\"gsm.jsonl\")\n\
                      data train = map(gsm, |r| {prompt: system(\"Solve it.\") + user(r.question), \
                      completion: r.answer, long: len(r.answer) > 8})\n\
                      data plain = map(jsonl(\"gsm.jsonl\"), |r: {question: String}| {prompt: r.question, \
                      completion: \"?\"})\n\
                      stage s = sft(m, train)\n\
                      run s\n";
        let program = recipe_compiler::compile(&Source::new("t.recipe", recipe), &[])
            .unwrap_or_else(|e| panic!("{:?}", e.iter().map(|d| &d.message).collect::<Vec<_>>()));
        let functions = Arc::new(Functions::new(&program.scalar).unwrap());
        let mut builder = Builder::new(&program, Device::Cpu, vec![dir.path().to_path_buf()], functions);
        let gsm = builder.dataset(&Value::Data("gsm".into())).unwrap();
        let train = builder.dataset(&Value::Data("train".into())).unwrap();
        assert_eq!(train.ids, vec![1, 3], "line numbers, as the input's");
        assert_eq!(train.sources, gsm.sources);
        assert_eq!(train.origin, format!("map({})", gsm.origin));
        let expected =
            Schema::new([("completion", FieldType::Str), ("long", FieldType::Bool), ("prompt", FieldType::Messages)]);
        assert_eq!(train.schema(), expected);
        let system = recipe_compiler::messages::turn("system", "Solve it.");
        let prompt = recipe_compiler::messages::concat(&system, &recipe_compiler::messages::turn("user", "Zoé?"));
        assert_eq!(&*train.conversations("prompt").unwrap()[1], prompt);
        assert_eq!(&*train.strings("completion").unwrap()[0], "3+4=7\n#### 7");
        assert_eq!(train.column("long"), Some(&Column::Bool(vec![true, false])));
        let plain = builder.dataset(&Value::Data("plain".into())).unwrap();
        assert_eq!(&*plain.strings("prompt").unwrap()[0], "Tom has 3 \"apples\".");
        assert_eq!(plain.schema().get("prompt"), Some(FieldType::Str));
    }

    /// The declared row type reaches `jsonl` through the compiled program, nested types included.
    #[test]
    fn a_declared_row_type_types_the_jsonl_rows() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rows.jsonl"), "{\"prompt\": \"a\", \"completion\": \"b\", \"n\": 2}\n")
            .unwrap();
        let recipe = "recipe \"t\" { seed = 1 }\n\
                      model m = tiny_lm()\n\
                      data rows: Dataset[{prompt: String, completion: String, n: Int}] = jsonl(\"rows.jsonl\")\n\
                      data nested: Dataset[{prompt: String, meta: {n: Int}}] = jsonl(\"rows.jsonl\")\n\
                      data first: Dataset[{prompt: String, n: Int}] = take(jsonl(\"rows.jsonl\"), 1)\n\
                      stage s = sft(m, rows)\n\
                      run s\n";
        let program = recipe_compiler::compile(&Source::new("t.recipe", recipe), &[]).unwrap();
        let functions = Arc::new(Functions::new(&program.scalar).unwrap());
        let mut builder = Builder::new(&program, Device::Cpu, vec![dir.path().to_path_buf()], functions);

        let rows = builder.dataset(&Value::Data("rows".into())).unwrap();
        assert_eq!(rows.column("n"), Some(&Column::Int(vec![2])));
        let first = builder.dataset(&Value::Data("first".into())).unwrap();
        assert_eq!(first.column("n"), Some(&Column::Int(vec![2])), "an inline source keeps the declared row type");
        // Bad input, pointed at the declaration that asked for it.
        match builder.dataset(&Value::Data("nested".into())) {
            Err(ExecError::InRecipe { kind: super::super::ErrorKind::Input, diagnostic }) => {
                let message = &diagnostic.message;
                assert!(message.contains("`meta`") && message.contains("`{n: Int}`"), "{message}");
                let (line, _) = diagnostic.source.as_ref().unwrap().line_col(diagnostic.span().unwrap().start);
                assert_eq!(line, 4, "the `nested` declaration");
            }
            other => panic!("expected a located input error, got {other:?}"),
        }
    }
}
