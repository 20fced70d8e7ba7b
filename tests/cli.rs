//! End-to-end tests of the `recipe` command: exit codes, every example recipe, the run folder,
//! determinism, `verify`, bad data and divergence, transforms, `score` and `generate` on the
//! Hugging Face fixture. Kill -9 and `--resume` are in `tests/resume.rs`.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn final_weights(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("checkpoints/00-sft-step000006/model/model.safetensors")).expect("final checkpoint")
}

#[test]
fn every_example_recipe_checks_and_formats() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("recipes"))
        .expect("recipes/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "recipe"))
        .collect();
    files.sort();
    assert!(files.len() >= 13, "the quickstart and twelve methods");
    for file in &files {
        let path = file.to_str().expect("utf-8 path");
        let out = recipe(&["check", path]);
        assert_eq!(code(&out), 0, "{path}: {}", stderr(&out));
        let out = recipe(&["fmt", "--check", path]);
        assert_eq!(code(&out), 0, "{path} is not formatted: {}", stderr(&out));
        let out = recipe(&["plan", "--json", path]);
        assert_eq!(code(&out), 0, "{path}: {}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).expect("plan --json prints JSON");
    }
}

/// The real model's GGUF file, where `scripts/fetch_smollm2.sh` puts it.
const SMOLLM2: &str = "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Every example runs a few steps of every stage, or — where it uses a stage kind this runtime
/// does not execute yet — says so before any compute, with its own exit code.
#[test]
fn every_example_recipe_runs_a_few_steps() {
    for entry in std::fs::read_dir(root().join("recipes")).expect("recipes/") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().expect("stem").to_string_lossy().into_owned();
        let out_dir = scratch(&format!("example-{name}"));
        let mut args = vec![
            "run",
            path.to_str().expect("utf-8"),
            "--max-steps",
            "2",
            "--quiet",
            "--out",
            out_dir.to_str().expect("utf-8"),
        ];
        // The real model's recipe reads a file CI does not have; with it, a smaller evaluation
        // and shorter rollouts keep it to a minute.
        if name == "smollm2_gsm8k" {
            if !root().join(SMOLLM2).is_file() {
                eprintln!("skipped {name}: {SMOLLM2} is absent (scripts/fetch_smollm2.sh fetches it)");
                continue;
            }
            args.extend(["--data-root", "models", "--data-root", "../shared/data"]);
            args.extend(["--set", "test_rows=2", "--set", "answer_tokens=8", "--set", "rollout_tokens=8"]);
        }
        let started = Instant::now();
        let out = recipe(&args);
        match code(&out) {
            0 => assert_eq!(trace(&out_dir).last().and_then(|l| l["step"].as_u64()), Some(2), "{name}"),
            // Two steps of SFT leave a policy that answers no sum right: its self-generated pairs
            // are empty, which the stage that trains on them refuses.
            3 if stderr(&out).contains("(self_pairs(") && stderr(&out).contains("has no rows") => {}
            6 => {
                assert!(stderr(&out).contains("cannot be executed by this version"), "{name}: {}", stderr(&out));
                assert!(started.elapsed() < Duration::from_secs(20), "{name}: refused only after compute");
                assert!(name != "quickstart", "the quickstart must run");
            }
            other => panic!("{name}: exit {other}: {}", stderr(&out)),
        }
        let _ = std::fs::remove_dir_all(&out_dir);
    }
}

#[test]
fn user_errors_have_distinct_exit_codes() {
    let bad = scratch("bad-recipe");
    std::fs::create_dir_all(&bad).expect("mkdir");
    let file = bad.join("bad.recipe");
    std::fs::write(&file, "recipe \"x\" { seed = 1 }\nmodel m = tiny_lm(layrs = 2)\n").expect("write");
    let out = recipe(&["check", file.to_str().expect("utf-8")]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("recipe::call::unknown_argument") && err.contains("layers"), "{err}");

    assert_eq!(code(&recipe(&["run"])), 2, "a missing FILE is a usage error");
    assert_eq!(code(&recipe(&["check", "recipes/quickstart.recipe", "--set", "novalue"])), 2);
    assert_eq!(code(&recipe(&["check", "does/not/exist.recipe"])), 3);

    let out = recipe(&["run", "tests/e2e/bad_data.recipe", "--quiet", "--out", scratch("bad-data").to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("rows.jsonl:3") && stderr(&out).contains("completion"), "{}", stderr(&out));

    // A row longer than the model's context is refused before any compute, with its line.
    let run = scratch("too-long");
    let out = recipe(&["run", "tests/e2e/too_long.recipe", "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("long_rows.jsonl:2 needs 27 positions"), "{}", stderr(&out));
    assert!(!run.exists(), "nothing is written before the recipe is accepted");

    // Run folders that are not, and an --out that is a file, are named as such.
    for command in [&["verify", "tests/e2e"][..], &["run", "--resume", "does/not/exist"], &["report", "tests/e2e"]] {
        let out = recipe(command);
        assert_eq!(code(&out), 3, "{command:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("is not a run folder"), "{command:?}: {}", stderr(&out));
    }
    let out = recipe(&["run", "tests/e2e/tiny_sft.recipe", "--quiet", "--out", "tests/e2e/rows.jsonl"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("--out `tests/e2e/rows.jsonl` is a file"), "{}", stderr(&out));
}

/// A learning rate or weight decay outside [0, ∞) is refused before any compute, at the argument,
/// naming the schedule and the first 0-based `step` it was given that goes out of the domain.
#[test]
fn schedules_out_of_their_domain_are_refused_before_compute() {
    let dir = scratch("schedule");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("negative.recipe");
    std::fs::write(
        &file,
        "recipe \"n\" { seed = 1 }\nmodel m = tiny_lm(layers = 1, d_model = 32, heads = 2)\n\
         data d = synth.addition(count = 32)\nfn lr(step: Int, total: Int) -> Float = 3e-3 * (1.0 - step / 100)\n\
         stage s = sft(m, d, steps = 200, lr = lr)\nrun s\n",
    )
    .expect("write");
    let run = dir.join("run");
    let out = recipe(&["run", file.to_str().unwrap(), "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("(schedule `lr`) is -0.0000") && err.contains("at step = 101 of total = 200"), "{err}");
    assert!(err.contains("negative.recipe:5:"), "located at the `lr` argument: {err}");
    assert!(!run.exists(), "nothing is written before the recipe is accepted");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A runtime error whose cause is in the recipe points there (file:line:col and a label), as
/// check errors do; what this runtime cannot execute is a `check` warning (an error under
/// `--strict`) and `run` refuses it before compute, at the same place.
#[test]
fn runtime_errors_point_into_the_recipe_and_check_promises_what_run_does() {
    let dir = scratch("located");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let write = |name: &str, text: &str| {
        let file = dir.join(name);
        std::fs::write(&file, text).expect("write");
        file.to_str().expect("utf-8").to_string()
    };
    let missing = write(
        "missing.recipe",
        "recipe \"m\" { seed = 1 }\nmodel m = load(\"models/missing\")\ndata d = synth.addition()\n\
         stage s = sft(m, d, steps = 2)\nrun s\n",
    );
    let run = dir.join("run-missing");
    let out = recipe(&["run", &missing, "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("recipe::run::input") && err.contains("`models/missing` not found"), "{err}");
    assert!(err.contains("missing.recipe:2:16"), "the `path` argument's line and column: {err}");
    assert!(!run.exists(), "nothing is written before the recipe is accepted");

    // Every builtin of the stdlib executes now; that `check` reports one that does not, at
    // its argument, and `run` refuses it before compute is `exec::registry`'s unit tests'.

    // An online curriculum needs groups of rollouts: an offline stage refuses it at the argument.
    let online = write(
        "band_pass.recipe",
        "recipe \"u\" { seed = 1 }\nmodel m = tiny_lm(layers = 1, d_model = 32, heads = 2)\n\
         data d = synth.addition(count = 32)\nstage s = sft(m, d, steps = 2, curriculum = band_pass())\nrun s\n",
    );
    let run = dir.join("run-band-pass");
    let out = recipe(&["run", &online, "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("`band_pass`, an online curriculum") && err.contains("band_pass.recipe:4:45"), "{err}");
    assert!(!run.exists());

    // Values no builtin can use are `check` errors at the argument (exit 1); values only this
    // runtime or these data and models cannot use are refused by `run` at the argument, before
    // compute (exit 3).
    let stage = |args: &str| {
        format!(
            "recipe \"v\" {{ seed = 1 }}\nmodel m = tiny_lm(layers = 1, d_model = 32, heads = 2)\n\
             data d = synth.addition(count = 32)\nstage s = sft(m, d, {args})\nrun s\n"
        )
    };
    for (args, arg, exit, says) in [
        ("steps = 0", "steps", 1, "`steps` of `sft` must be at least 1, not 0"),
        ("batch = -3", "batch", 1, "`batch` of `sft` must be at least 1, not -3"),
        (
            "curriculum = pacing(by = |r| float(r.digits), until = 0.0)",
            "until",
            1,
            "`until` of `pacing` must be in (0, 1], not 0",
        ),
        (
            "curriculum = buckets(by = |r| float(r.digits), count = 0)",
            "count",
            1,
            "`count` of `buckets` must be at least 1, not 0",
        ),
        ("batch = 1_000_000_000", "batch", 3, "`batch` must be in 1..="),
        ("optimizer = keep", "optimizer", 3, "no optimiser moments to keep"),
        ("curriculum = buckets(by = |r| float(r.digits), count = 40)", "count", 3, "`count` must be in 1..=32"),
        ("steps = 2, curriculum = buckets(by = |r| float(r.digits), count = 3)", "steps", 3, "at least one step"),
    ] {
        // The value's column: after `stage s = sft(m, d, ` (20 characters) and `arg = `.
        let col = 21 + args.find(&format!("{arg} = ")).expect("arg = value") + arg.len() + 3;
        let file = write("values.recipe", &stage(args));
        let run = dir.join("run-values");
        let out = recipe(&["run", &file, "--quiet", "--out", run.to_str().unwrap()]);
        assert_eq!(code(&out), exit, "{args}: {}", stderr(&out));
        assert!(!run.exists(), "nothing is written before the recipe is accepted");
        let err = stderr(&out);
        assert!(err.contains(says) && err.contains(&format!("values.recipe:4:{col}")), "{args}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_nan_stops_training_and_keeps_what_was_written() {
    let run = scratch("diverge");
    let out = recipe(&["run", "tests/e2e/diverge.recipe", "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("step 5: the loss is NaN"), "{err}");
    assert!(err.contains("start a new run") && !err.contains("resume with"), "advice that works: {err}");
    assert_eq!(trace(&run).len(), 4, "the four healthy steps stay logged");
    assert!(run.join("recipe.lock").exists());
}

#[test]
fn runs_are_deterministic_verifiable_and_self_describing() {
    let (a, b) = (scratch("det-a"), scratch("det-b"));
    for dir in [&a, &b] {
        let out = recipe(&["run", "tests/e2e/tiny_sft.recipe", "--quiet", "--out", dir.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    assert_eq!(trace(&a), trace(&b));
    assert_eq!(final_weights(&a), final_weights(&b));
    for file in ["recipe.lock", "report.html", "README.md"] {
        assert!(a.join(file).exists(), "{file}");
    }
    assert_events_mirror_metrics(&a);
    let lock: Value = serde_json::from_slice(&std::fs::read(a.join("recipe.lock")).unwrap()).unwrap();
    assert_eq!(lock["seed"], 3);
    assert_eq!(lock["recipe_sha256"].as_str().map(str::len), Some(64));
    let evals = trace(&a).iter().filter(|l| l.get("eval").is_some()).count();
    assert_eq!(evals, 2, "eval every 3 steps of 6");

    // Without the `cuda` feature (as CI builds), asking for CUDA is refused, not a usage error.
    if !cfg!(feature = "cuda") {
        let out =
            recipe(&["run", "tests/e2e/tiny_sft.recipe", "--quiet", "--device", "cuda", "--out", b.to_str().unwrap()]);
        assert_eq!(code(&out), 6, "{}", stderr(&out));
        assert!(stderr(&out).contains("built without CUDA"), "{}", stderr(&out));
    }

    // Optimiser settings are checked before any compute: a constant one by `check` itself, at
    // the argument the `--set` value reaches.
    let out =
        recipe(&["run", "tests/e2e/tiny_sft.recipe", "--quiet", "--set", "beta1=1.5", "--out", b.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("tiny_sft.recipe:22:18"), "{}", stderr(&out));
    assert!(stderr(&out).contains("`adam_beta1` of `sft` must be in [0, 1), not 1.5"), "{}", stderr(&out));

    // A folder that already holds a run is the user's mistake, refused without touching it.
    let before = trace(&a);
    let out = recipe(&["run", "tests/e2e/tiny_sft.recipe", "--quiet", "--out", a.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("already holds a run") && !stderr(&out).contains("bug"), "{}", stderr(&out));
    assert_eq!(trace(&a), before);

    let out = recipe(&["verify", a.to_str().unwrap(), "--quiet"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // A tampered trace is caught.
    let metrics = a.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).unwrap().replacen("\"step\":2", "\"step\":20", 1);
    std::fs::write(&metrics, text).unwrap();
    let out = recipe(&["verify", a.to_str().unwrap(), "--quiet"]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
}

/// A recipe in its own folder, run from there (`run nl.recipe`), reading `rows.jsonl` beside it:
/// completions with newlines are learnt whole (the embedded tokenizer's EOS is not a byte); the
/// run folder works from any other directory (`verify`, `--resume`) and names its final model,
/// which `generate` and `score` take as the run folder itself.
#[test]
fn a_run_folder_works_from_anywhere_and_names_its_final_model() {
    let dir = scratch("anywhere");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let rows = [("x=", "a3\nb3"), ("y=", "c4\nd4")];
    let text: Vec<String> =
        rows.iter().map(|(p, c)| serde_json::json!({"prompt": p, "completion": c}).to_string()).collect();
    std::fs::write(dir.join("rows.jsonl"), text.join("\n") + "\n").expect("write");
    std::fs::write(
        dir.join("nl.recipe"),
        "recipe \"newline\" { seed = 1 }\nmodel policy = tiny_lm(layers = 1, d_model = 32, heads = 2, context = 16)\n\
         data rows: Dataset[{prompt: String, completion: String}] = jsonl(\"rows.jsonl\")\nstage sft = sft(policy, rows, steps = 80, batch = 4, lr = 1e-2)\n\
         eval exact = accuracy(rows, every = 80, max_tokens = 8)\nrun sft\n",
    )
    .expect("write");
    let out = recipe_in(&dir, &["run", "nl.recipe", "--quiet", "--out", "run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let run = dir.join("run");
    let last = trace(&run).pop().expect("a metrics line");
    assert_eq!(last["eval"]["exact"]["accuracy"], 1.0, "both multi-line completions are learnt whole: {last}");

    let lock: Value = serde_json::from_slice(&std::fs::read(run.join("recipe.lock")).unwrap()).unwrap();
    assert_eq!(lock["final"], "checkpoints/00-sft-step000080/model");
    let out = recipe(&["generate", "--model", run.to_str().unwrap(), "--prompt", "x=", "--max-tokens", "8"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a3\nb3\n", "the run folder's final model continues");
    let checkpoint = run.join("checkpoints/00-sft-step000080");
    let out =
        recipe(&["score", "--model", checkpoint.to_str().unwrap(), "--data", dir.join("rows.jsonl").to_str().unwrap()]);
    assert_eq!(code(&out), 0, "a checkpoint folder is a model too: {}", stderr(&out));

    let (run_arg, elsewhere) = (run.to_str().unwrap(), root());
    let out = recipe_in(&elsewhere, &["verify", run_arg, "--quiet"]);
    assert_eq!(code(&out), 0, "verify from another directory: {}", stderr(&out));
    let out = recipe_in(&elsewhere, &["run", "--resume", run_arg, "--quiet"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("finished already"), "{}", stderr(&out));
    // Killed after its last checkpoint but before it was recorded as finished: resume from elsewhere.
    let mut unfinished = lock.clone();
    unfinished.as_object_mut().unwrap().remove("final");
    std::fs::write(run.join("recipe.lock"), unfinished.to_string()).unwrap();
    let out = recipe_in(&elsewhere, &["run", "--resume", run_arg, "--quiet"]);
    assert_eq!(code(&out), 0, "--resume from another directory: {}", stderr(&out));
    let lock: Value = serde_json::from_slice(&std::fs::read(run.join("recipe.lock")).unwrap()).unwrap();
    assert_eq!(lock["final"], "checkpoints/00-sft-step000080/model");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A declared row type is the schema that is read: an `accuracy` eval over rows declared without
/// `completion` cannot read the file's `completion` field, and the run fails cleanly, at the
/// recipe (a check error or bad input), never training on the undeclared field.
#[test]
fn undeclared_fields_are_not_read() {
    let dir = scratch("undeclared");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("rows.jsonl"), "{\"prompt\": \"1+1=\", \"completion\": \"2\"}\n").expect("write");
    std::fs::write(
        dir.join("held.recipe"),
        "recipe \"held\" { seed = 1 }\nmodel m = tiny_lm(layers = 1, d_model = 32, heads = 2, context = 16)\n\
         data train: Dataset[{prompt: String, completion: String}] = jsonl(\"rows.jsonl\")\n\
         data held: Dataset[{prompt: String}] = jsonl(\"rows.jsonl\")\n\
         stage s = sft(m, train, steps = 2, batch = 1)\neval acc = accuracy(held, every = 1)\nrun s\n",
    )
    .expect("write");
    let out = recipe_in(&dir, &["run", "held.recipe", "--quiet", "--out", "run"]);
    assert!(matches!(code(&out), 1 | 3), "exit {}: {}", code(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("completion") && err.contains("held.recipe:"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `log_every = N` writes a metrics line every N steps (and at evaluations and the last step);
/// 0 is refused at the argument; an eval's `every = 0` evaluates only at the end of each stage.
#[test]
fn log_every_thins_the_metrics_and_zero_is_refused() {
    let dir = scratch("log-every");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("log.recipe"),
        "recipe \"log\" { seed = 1 }\nlet n = 2\nmodel m = tiny_lm(layers = 1, d_model = 32, heads = 2, context = 16)\n\
         data d = synth.addition(digits = 1..=1, count = 32)\n\
         stage s = sft(m, d, steps = 7, batch = 2, log_every = n)\neval acc = accuracy(d, every = 0, max_tokens = 2)\n\
         run s\n",
    )
    .expect("write");
    let out = recipe_in(&dir, &["run", "log.recipe", "--quiet", "--out", "run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let steps: Vec<u64> = trace(&dir.join("run")).iter().map(|l| l["step"].as_u64().expect("step")).collect();
    assert_eq!(steps, [2, 4, 6, 7], "every 2 steps and the last");
    assert!(trace(&dir.join("run"))[3].get("eval").is_some(), "`every = 0` evaluates at the end only");
    // A recipe error at the argument, before anything runs (as `recipe check` reports it).
    let out = recipe_in(&dir, &["run", "log.recipe", "--quiet", "--set", "n=0", "--out", "run0"]);
    assert_eq!(code(&out), 1, "a check error: {}", stderr(&out));
    assert!(!dir.join("run0").exists());
    assert!(stderr(&out).contains("`log_every` of `sft` must be at least 1") && stderr(&out).contains("log.recipe:5:"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rows `on_error = skip` leaves out are reported with their lines: as a note, as the first
/// metrics line (which `verify` and `report` still read), and in the lock.
#[test]
fn skipped_rows_are_reported_with_their_lines() {
    let dir = scratch("skip");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let good = |p: &str| serde_json::json!({"prompt": p, "completion": "1"}).to_string();
    let rows = [good("a"), "{\"prompt\": \"b\"}".into(), good("c"), "not json".into(), good("d")];
    std::fs::write(dir.join("rows.jsonl"), rows.join("\n") + "\n").expect("write");
    std::fs::write(
        dir.join("skip.recipe"),
        "recipe \"skip\" { seed = 1 }\nmodel m = tiny_lm(layers = 1, d_model = 32, heads = 2, context = 16)\n\
         data d: Dataset[{prompt: String, completion: String}] = jsonl(\"rows.jsonl\", on_error = skip)\nstage s = sft(m, d, steps = 2, batch = 2)\nrun s\n",
    )
    .expect("write");
    let out = recipe_in(&dir, &["run", "skip.recipe", "--json", "--out", "run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("skipped 2 malformed rows in rows.jsonl (lines 2, 4)"), "{stdout}");
    let run = dir.join("run");
    let expected = serde_json::json!({"event": "skipped_rows", "file": "rows.jsonl", "count": 2, "lines": [2, 4]});
    assert_eq!(trace(&run)[0], expected);
    let lock: Value = serde_json::from_slice(&std::fs::read(run.join("recipe.lock")).unwrap()).unwrap();
    assert_eq!(lock["skipped"], serde_json::json!([{"file": "rows.jsonl", "count": 2, "lines": [2, 4]}]));
    assert_eq!(code(&recipe(&["verify", run.to_str().unwrap(), "--quiet"])), 0);
    assert_eq!(code(&recipe(&["report", run.to_str().unwrap()])), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn fixture(name: &str) -> Option<PathBuf> {
    let base =
        std::env::var_os("RECIPE_FIXTURES").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/fixtures"));
    let path = base.join(name);
    path.exists().then_some(path)
}

#[test]
fn score_and_generate_work_on_a_hugging_face_folder() {
    let model = fixture("tiny-llama").expect("../shared/fixtures/tiny-llama (set RECIPE_FIXTURES)");
    let reference: Value =
        serde_json::from_slice(&std::fs::read(model.join("dpo_step0_reference.json")).unwrap()).unwrap();
    let dir = scratch("score-hf-folder");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("pairs.jsonl");
    let pairs = reference["pairs"].as_array().expect("pairs");
    let rows: Vec<String> = pairs
        .iter()
        // The fixture's texts end in the EOS byte; `score` appends EOS itself, as TRL does.
        .map(|p| {
            let completion = p["chosen"].as_str().expect("chosen").trim_end_matches('\n');
            serde_json::json!({"prompt": p["prompt"], "completion": completion}).to_string()
        })
        .collect();
    std::fs::write(&data, rows.join("\n") + "\n").unwrap();
    let out = recipe(&["score", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), pairs.len());
    let expected = reference["all16"]["plain_f64"]["policy_chosen_logps"].as_array().expect("reference logps");
    for (line, want) in lines.iter().zip(expected) {
        let (got, want) = (line["logprob_sum"].as_f64().unwrap(), want.as_f64().unwrap());
        assert!((got - want).abs() < 1e-4, "summed log-prob {got} vs reference {want}");
    }

    let out =
        recipe(&["generate", "--model", model.to_str().unwrap(), "--prompt", "12+34=", "--max-tokens", "8", "--ids"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ids = String::from_utf8_lossy(&out.stdout);
    let count = ids.split_whitespace().map(|t| t.parse::<u32>().expect("token id")).count();
    assert!((1..=8).contains(&count), "{ids}");

    // Inputs longer than the model's 512 positions are the user's, named, never an internal error.
    let long = dir.join("long.jsonl");
    let row = |p: &str| serde_json::json!({"prompt": p, "completion": "2"}).to_string();
    std::fs::write(&long, format!("{}\n{}\n", row("1+1="), row(&"1".repeat(600)))).unwrap();
    let out = recipe(&["score", "--model", model.to_str().unwrap(), "--data", long.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("long.jsonl:2 needs 602 positions"), "{}", stderr(&out));
    let out = recipe(&["generate", "--model", model.to_str().unwrap(), "--prompt", "12+34=", "--max-tokens", "1000"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("exceeds the model's 512 positions"), "{}", stderr(&out));
}

#[test]
fn the_readme_recipe_is_the_quickstart_and_checks() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let block = readme.split("```recipe\n").nth(1).and_then(|b| b.split("```").next()).expect("a recipe block");
    let quickstart = std::fs::read_to_string(root().join("recipes/quickstart.recipe")).expect("quickstart");
    let without_comments: String = quickstart.lines().filter(|l| !l.starts_with("// ")).collect::<Vec<_>>().join("\n");
    assert_eq!(block.trim(), without_comments.trim(), "README shows recipes/quickstart.recipe");
}

/// `eval_on_start` (TRL's name) evaluates before the first step, logged at `step = 0`; the run
/// still verifies.
#[test]
fn eval_on_start_logs_an_evaluation_at_step_zero() {
    let dir = scratch("eval-on-start");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let text = std::fs::read_to_string(root().join("tests/e2e/tiny_sft.recipe")).expect("tiny_sft");
    let text = text.replace("{ seed = 3 }", "{ seed = 3, eval_on_start = true }");
    assert!(text.contains("eval_on_start"), "the header changed");
    let file = dir.join("start.recipe");
    std::fs::write(&file, text).expect("write");
    let run = dir.join("run");
    let out = recipe(&["run", file.to_str().unwrap(), "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines = trace(&run);
    assert_eq!(lines[0]["step"], 0, "{:?}", lines[0]);
    assert!(lines[0]["eval"]["held_acc"]["accuracy"].is_number(), "{:?}", lines[0]);
    assert!(lines[0].get("loss").is_none(), "no step ran yet");
    assert_eq!(lines[1]["step"], 1);
    let out = recipe(&["verify", run.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `judged_accuracy` asks the recipe's judge about each greedy completion: judging by equality
/// with `answer` gives exactly what `accuracy` gives, a judge that accepts everything gives 1,
/// and a judge reading a field the rows lack is a check error at the field.
#[test]
fn judged_accuracy_asks_the_recipes_judge() {
    let dir = scratch("judged-accuracy");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let text = std::fs::read_to_string(root().join("tests/e2e/tiny_sft.recipe")).expect("tiny_sft");
    let evals = "eval same = judged_accuracy(held, judge = |r| r.completion == r.answer, every = 3, max_tokens = 4)\n\
                 eval all = judged_accuracy(held, judge = |r| len(r.completion) >= 0, every = 3, max_tokens = 4)\n";
    let file = dir.join("judged.recipe");
    std::fs::write(&file, text.replace("\nrun ", &format!("\n{evals}run "))).expect("write");
    let run = dir.join("run");
    let out = recipe(&["run", file.to_str().unwrap(), "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let evaluated: Vec<_> = trace(&run).into_iter().filter(|l| l.get("eval").is_some()).collect();
    assert!(!evaluated.is_empty());
    for line in evaluated {
        let eval = &line["eval"];
        assert_eq!(eval["same"]["accuracy"], eval["held_acc"]["accuracy"], "{line}");
        assert_eq!(eval["all"]["accuracy"], 1.0, "{line}");
    }
    let bad = dir.join("bad.recipe");
    std::fs::write(
        &bad,
        text.replace("\nrun ", "\neval bad = judged_accuracy(held, judge = |r| r.nope == r.answer)\nrun "),
    )
    .expect("write");
    let out = recipe(&["check", bad.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("has no field") && stderr(&out).contains("nope"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `synth.rated_responses` → `best_worst_pairs`, split into halves by the policy's reference
/// margin (`select = top` and `bottom`, `keep = 0.5`), and an SFT stage on the data of a third
/// score stage: the kept rows are in the run folder and the lock, every top score is at least
/// every bottom score, the run replays, and a resumed run recomputes the data it needs.
#[test]
fn score_stages_keep_a_share_of_the_rows_by_their_measure_and_feed_later_stages() {
    let run = scratch("score");
    let out = recipe(&["run", "tests/e2e/score.recipe", "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let whole = trace(&run);
    let events: Vec<&Value> = whole.iter().filter(|l| l["event"] == "score").collect();
    let stages: Vec<&str> = events.iter().map(|e| e["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["top", "bottom", "short"]);
    for e in &events {
        let (rows, kept) = (e["rows"].as_u64().unwrap(), e["kept"].as_u64().unwrap());
        assert_eq!(kept, (rows as f64 * 0.5).round() as u64, "{e}");
    }

    let (top, bottom) = (data_rows(&run, "00-top"), data_rows(&run, "01-bottom"));
    assert_eq!(top.len() as u64, events[0]["kept"].as_u64().unwrap());
    assert_eq!(bottom.len() as u64, events[1]["kept"].as_u64().unwrap());
    let score = |r: &Value| r["score"].as_f64().expect("a score");
    let top_min = top.iter().map(score).fold(f64::INFINITY, f64::min);
    let bottom_max = bottom.iter().map(score).fold(f64::NEG_INFINITY, f64::max);
    assert!(top_min >= bottom_max, "top {top_min} vs bottom {bottom_max}");
    assert_eq!(top_min, events[0]["kept_score_min"].as_f64().unwrap());
    // One pair per prompt: the two halves cover every pair (the median in both when odd).
    let prompts: std::collections::HashSet<&str> =
        top.iter().chain(&bottom).map(|r| r["prompt"].as_str().unwrap()).collect();
    assert_eq!(prompts.len() as u64, events[0]["rows"].as_u64().unwrap());
    for row in &top {
        assert!(row["chosen_rating"].as_f64().unwrap() > row["rejected_rating"].as_f64().unwrap(), "{row}");
    }
    // `length()` is the prompt's length in bytes; the SFT stage trained on those rows.
    let short = data_rows(&run, "02-short");
    assert_eq!(short.len(), 32);
    assert!(short.iter().all(|r| score(r) == r["prompt"].as_str().unwrap().len() as f64));
    assert_eq!(whole.last().and_then(|l| l["step"].as_u64()), Some(4));
    let lock: Value = serde_json::from_slice(&std::fs::read(run.join("recipe.lock")).unwrap()).unwrap();
    let generated: Vec<(&str, u64)> = lock["generated"]
        .as_array()
        .expect("generated data in the lock")
        .iter()
        .map(|d| (d["path"].as_str().unwrap(), d["bytes"].as_u64().unwrap()))
        .collect();
    assert_eq!(generated.len(), 3);
    for (path, bytes) in generated {
        assert_eq!(std::fs::metadata(run.join(path)).unwrap().len(), bytes, "{path}");
    }

    let out = recipe(&["verify", run.to_str().unwrap(), "--quiet"]);
    assert_eq!(code(&out), 0, "the score lines replay: {}", stderr(&out));

    // A crash after the SFT stage's first checkpoint: the resumed stage needs the `short` data
    // again (computed, not logged twice) and ends where the uninterrupted run ended.
    let weights = |run: &Path| std::fs::read(run.join("checkpoints/03-train-step000004/model/model.safetensors"));
    let final_weights = weights(&run).expect("final checkpoint");
    for step in 2..=4 {
        std::fs::remove_dir_all(run.join(format!("checkpoints/03-train-step{step:06}"))).expect("checkpoint");
    }
    let mut unfinished = lock.clone();
    unfinished.as_object_mut().unwrap().remove("final");
    std::fs::write(run.join("recipe.lock"), unfinished.to_string()).unwrap();
    let out = recipe(&["run", "--resume", run.to_str().unwrap(), "--quiet"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(trace(&run), whole, "the resumed trace");
    assert_eq!(weights(&run).unwrap(), final_weights, "the resumed weights");
    let _ = std::fs::remove_dir_all(&run);
}

/// `synth.addition` → `perturb` → `contrast_pairs` → SFT on the pairs: every row's chosen response
/// is its reference answer and its rejected one the policy's greedy answer to the perturbed prompt;
/// the pairs are in the run folder and the lock, the run replays, and a resumed run recomputes
/// them. A second run whose reference answers are the first run's greedy answers (every other
/// row, with trailing whitespace) drops exactly those rows as agreeing.
#[test]
fn contrast_pairs_stages_pair_reference_answers_with_greedy_answers_to_perturbed_prompts() {
    let run = scratch("contrast");
    let out = recipe(&["run", "tests/e2e/contrast.recipe", "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let whole = trace(&run);
    let events: Vec<&Value> = whole.iter().filter(|l| l["event"] == "contrast_pairs").collect();
    assert_eq!(events.len(), 1, "{whole:?}");
    let event = events[0];
    assert_eq!((event["stage"].as_str(), event["rows"].as_u64()), (Some("pairs"), Some(40)), "{event}");
    let pairs = data_rows(&run, "00-pairs");
    let dropped = event["dropped_agreeing"].as_u64().unwrap() + event["dropped_empty"].as_u64().unwrap();
    assert_eq!(pairs.len() as u64, event["pairs"].as_u64().unwrap());
    assert_eq!(pairs.len() as u64 + dropped, 40);
    let text = |r: &Value, f: &str| r[f].as_str().unwrap_or_else(|| panic!("`{f}` in {r}")).to_string();
    for row in &pairs {
        assert_eq!(text(row, "chosen"), text(row, "completion"), "{row}");
        assert_ne!(text(row, "rejected").trim(), text(row, "chosen").trim(), "{row}");
        assert_ne!(text(row, "perturbed"), text(row, "prompt"), "the input's fields are kept: {row}");
    }
    assert_eq!(whole.last().and_then(|l| l["step"].as_u64()), Some(4), "the SFT stage trained on the pairs");
    let lock: Value = serde_json::from_slice(&std::fs::read(run.join("recipe.lock")).unwrap()).unwrap();
    let generated = lock["generated"].as_array().expect("generated data in the lock");
    assert_eq!(generated.len(), 1);
    assert_eq!(generated[0]["path"], "data/00-pairs.jsonl");
    let bytes = std::fs::metadata(run.join("data/00-pairs.jsonl")).unwrap().len();
    assert_eq!(generated[0]["bytes"].as_u64(), Some(bytes));

    let out = recipe(&["verify", run.to_str().unwrap(), "--quiet"]);
    assert_eq!(code(&out), 0, "the pairs replay: {}", stderr(&out));

    // A crash after the SFT stage's first checkpoint: the resumed stage needs the pairs again
    // (generated, not logged twice) and ends where the uninterrupted run ended.
    let weights = |run: &Path| std::fs::read(run.join("checkpoints/01-train-step000004/model/model.safetensors"));
    let final_weights = weights(&run).expect("final checkpoint");
    for step in 2..=4 {
        std::fs::remove_dir_all(run.join(format!("checkpoints/01-train-step{step:06}"))).expect("checkpoint");
    }
    let mut unfinished = lock.clone();
    unfinished.as_object_mut().unwrap().remove("final");
    std::fs::write(run.join("recipe.lock"), unfinished.to_string()).unwrap();
    let out = recipe(&["run", "--resume", run.to_str().unwrap(), "--quiet"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(trace(&run), whole, "the resumed trace");
    assert_eq!(weights(&run).unwrap(), final_weights, "the resumed weights");
    assert_eq!(data_rows(&run, "00-pairs"), pairs, "the pairs file is not rewritten differently");

    // The same policy on rows whose reference answer is, for every other row, its greedy answer.
    assert_eq!(dropped, 0, "an untrained policy does not answer sums: {pairs:?}");
    let dir = scratch("contrast-agreeing");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let rows: Vec<String> = pairs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let completion = if i % 2 == 0 { format!("{} ", text(r, "rejected")) } else { text(r, "chosen") };
            serde_json::json!({"prompt": text(r, "prompt"), "completion": completion, "perturbed": text(r, "perturbed")})
                .to_string()
        })
        .collect();
    std::fs::write(dir.join("rows.jsonl"), rows.join("\n") + "\n").expect("write");
    std::fs::write(
        dir.join("agree.recipe"),
        "recipe \"agree\" { seed = 4 }\nmodel policy = tiny_lm(layers = 1, d_model = 32, heads = 2, context = 24)\n\
         data rows: Dataset[{prompt: String, completion: String, perturbed: String}] = jsonl(\"rows.jsonl\")\n\
         stage pairs = contrast_pairs(policy, rows, perturbed = |r| r.perturbed, max_tokens = 8)\nrun pairs\n",
    )
    .expect("write");
    let again = dir.join("run");
    let out = recipe(&["run", dir.join("agree.recipe").to_str().unwrap(), "--quiet", "--out", again.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let event = trace(&again).into_iter().find(|l| l["event"] == "contrast_pairs").expect("an event line");
    assert_eq!((event["pairs"].as_u64(), event["dropped_agreeing"].as_u64()), (Some(20), Some(20)), "{event}");
    let kept = data_rows(&again, "00-pairs");
    let odd: Vec<String> = pairs.iter().skip(1).step_by(2).map(|r| text(r, "rejected")).collect();
    assert_eq!(kept.iter().map(|r| text(r, "rejected")).collect::<Vec<_>>(), odd, "the same greedy answers");
    let _ = std::fs::remove_dir_all(&run);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A perturbed prompt that does not fit the policy's context with `max_tokens` new tokens is
/// refused before compute, naming its row, at the `perturbed` argument.
#[test]
fn contrast_pairs_stages_refuse_prompts_that_do_not_fit() {
    let out = recipe(&["check", "tests/e2e/contrast.recipe", "--strict"]);
    assert_eq!(code(&out), 0, "contrast_pairs is executable: {}", stderr(&out));
    let dir = scratch("contrast-long");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("long.recipe");
    std::fs::write(
        &file,
        "recipe \"l\" { seed = 1 }\nmodel m = tiny_lm(layers = 1, d_model = 32, heads = 2, context = 12)\n\
         data d = perturb(synth.addition(count = 32), seed = 1)\n\
         stage s = contrast_pairs(m, d, perturbed = |r| r.perturbed, max_tokens = 8)\nrun s\n",
    )
    .expect("write");
    let run = dir.join("run");
    let out = recipe(&["run", file.to_str().unwrap(), "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    // The message as one line, without the frame miette wraps it in.
    let message = err.split_whitespace().filter(|w| *w != "│").collect::<Vec<_>>().join(" ");
    assert!(message.contains("stage `s`: row 0 of perturb(synth.addition"), "{err}");
    assert!(message.contains("needs 14 positions (a perturbed prompt of 6 tokens"), "{err}");
    assert!(err.contains("long.recipe:4:44"), "at the `perturbed` argument: {err}");
    assert!(!run.exists(), "nothing is written before the recipe is accepted");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a score stage cannot use is refused before compute: `keep` outside (0, 1] by `check`,
/// a measure reading fields the rows lack by `run`, at the argument.
#[test]
fn score_stages_refuse_what_they_cannot_use() {
    let out = recipe(&["check", "tests/golden/call/domain_from_let.recipe"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("recipe::call::domain"), "{}", stderr(&out));
    let out = recipe(&["check", "tests/e2e/score.recipe", "--set", "seed=1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let dir = scratch("score-bad");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("margin.recipe");
    std::fs::write(
        &file,
        "recipe \"m\" { seed = 1 }\nmodel m = tiny_lm(layers = 1, d_model = 32, heads = 2)\n\
         data d = synth.addition(count = 32)\nstage s = score(m, d, measure = ref_margin(), keep = 0.5)\nrun s\n",
    )
    .expect("write");
    let run = dir.join("run");
    let out = recipe(&["run", file.to_str().unwrap(), "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("`ref_margin` reads the String field `chosen`"), "{err}");
    assert!(err.contains("margin.recipe:4:33"), "at the `measure` argument: {err}");
    assert!(!run.exists(), "nothing is written before the recipe is accepted");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A GGUF file works wherever a model folder does (the real model: `runtime/tests/gguf.rs`); one
/// that is missing, not GGUF, or of an architecture the runtime does not read is bad input
/// (exit 3) with a message naming the cause, for `convert` and `--model` alike.
#[test]
fn gguf_files_that_cannot_be_read_are_bad_input() {
    let dir = scratch("gguf");
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::write(dir.join("text.gguf"), "not a model").unwrap();
    // A GGUF v3 header: no tensors, one metadata entry (general.architecture = "gemma", type 8: string).
    let mut gemma = b"GGUF".to_vec();
    gemma.extend(3u32.to_le_bytes());
    gemma.extend(0u64.to_le_bytes());
    gemma.extend(1u64.to_le_bytes());
    for (i, s) in ["general.architecture", "gemma"].iter().enumerate() {
        if i == 1 {
            gemma.extend(8u32.to_le_bytes());
        }
        gemma.extend((s.len() as u64).to_le_bytes());
        gemma.extend(s.as_bytes());
    }
    std::fs::write(dir.join("gemma.gguf"), gemma).unwrap();

    let (text, gemma, missing, out) = (path("text.gguf"), path("gemma.gguf"), path("missing.gguf"), path("out"));
    let cases = [
        (vec!["convert", &text, "--out", &out], "not a GGUF file"),
        (vec!["convert", &gemma, "--out", &out], "architecture `gemma` is not supported"),
        (vec!["generate", "--model", &missing, "--prompt", "hi"], "no model folder or GGUF file"),
    ];
    for (args, message) in cases {
        let out = recipe(&args);
        assert_eq!(code(&out), 3, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    assert!(!dir.join("out").exists(), "nothing is written for a model that cannot be read");
}
