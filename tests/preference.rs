//! End-to-end tests of preference optimisation through the `recipe` command: a `preference`
//! stage run by `recipe run` (metrics with TRL's names, the reference in the lock, rows refused
//! before compute), and `recipe loss` on the TRL fixture (`../shared/fixtures`) and on bad input.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RECIPE: &str = env!("CARGO_BIN_EXE_recipe");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn recipe(args: &[&str]) -> Output {
    Command::new(RECIPE).args(args).current_dir(root()).env("NO_COLOR", "1").output().expect("spawn recipe")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("recipe-pref-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The metrics lines of `stage`.
fn lines_of(run: &Path, stage: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines().map(|l| serde_json::from_str::<Value>(l).expect("JSON")).filter(|l| l["stage"] == stage).collect()
}

const METRICS: [&str; 8] = [
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "loss/dpo",
    "loss/nll",
];

#[test]
fn a_preference_stage_runs_end_to_end_and_verifies() {
    let dir = scratch("run");
    let run = dir.join("run");
    let file = root().join("tests/e2e/tiny_preference.recipe");
    assert_eq!(code(&recipe(&["check", "--strict", path(&file)])), 0, "`preference` is executable");
    let out = recipe(&["run", path(&file), "--quiet", "--out", path(&run)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines = lines_of(&run, "po");
    assert_eq!(lines.len(), 4, "one line per step");
    for line in &lines {
        for name in METRICS {
            assert!(line[name].as_f64().is_some_and(f64::is_finite), "{name} in {line}");
        }
        let (chosen, rejected) = (line["rewards/chosen"].as_f64().unwrap(), line["rewards/rejected"].as_f64().unwrap());
        assert!((line["rewards/margins"].as_f64().unwrap() - (chosen - rejected)).abs() < 1e-9);
        let parts = line["loss/dpo"].as_f64().unwrap() + line["loss/nll"].as_f64().unwrap();
        assert!((line["loss"].as_f64().unwrap() - parts).abs() < 1e-5, "the loss is its weighted terms: {line}");
    }
    // The reference is the policy as the stage starts: no margin and DPO's ln 2 at the first step.
    let first = &lines[0];
    assert!(first["rewards/margins"].as_f64().unwrap().abs() < 1e-6, "{first}");
    assert!((first["loss/dpo"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-5, "{first}");
    assert!(lines[3]["rewards/margins"].as_f64().unwrap().abs() > 0.0, "training moves the policy");

    let lock: Value = serde_json::from_slice(&std::fs::read(run.join("recipe.lock")).unwrap()).unwrap();
    let references = lock["references"].as_array().expect("references in the lock");
    assert_eq!(references.len(), 1);
    assert_eq!((&references[0]["stage"], &references[0]["model"]), (&Value::from("po"), &Value::from("sft.model")));
    assert_eq!(references[0]["sha256"].as_str().map(str::len), Some(64));
    let out = recipe(&["verify", path(&run), "--quiet"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // WPO reads the policy's WPO statistic, and a scheduled beta is evaluated at each step.
    let wpo = dir.join("wpo");
    let set = "loss=wpo(beta = interpolate(0.1, 0.3))";
    let out = recipe(&["run", path(&file), "--quiet", "--max-steps", "2", "--set", set, "--out", path(&wpo)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for line in lines_of(&wpo, "po") {
        let weight = line["wpo/weight"].as_f64().expect("wpo/weight is logged");
        assert!(weight > 0.0 && weight.is_finite(), "{line}");
        assert!(line["loss/wpo"].as_f64().is_some_and(f64::is_finite), "{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The metrics lines without their timing fields.
fn trace(run: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("JSON");
            v.as_object_mut().expect("object").remove("timing");
            v
        })
        .collect()
}

/// A run interrupted inside the preference stage (its later checkpoints gone, as after a
/// kill -9) and resumed ends exactly as the uninterrupted run: the reference is rebuilt from
/// what it names and rescored into the cache. A rebuilt reference that differs from the
/// recorded one is refused.
#[test]
fn a_resumed_preference_stage_ends_as_an_uninterrupted_one() {
    let dir = scratch("resume");
    let whole = dir.join("whole");
    let file = root().join("tests/e2e/tiny_preference.recipe");
    let out = recipe(&["run", path(&file), "--quiet", "--out", path(&whole)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let weights = |run: &Path| std::fs::read(run.join("checkpoints/01-po-step000004/model/model.safetensors")).unwrap();
    for cut in [0, 2] {
        let run = dir.join(format!("cut-{cut}"));
        copy_dir(&whole, &run);
        for step in cut + 1..=4 {
            std::fs::remove_dir_all(run.join(format!("checkpoints/01-po-step{step:06}"))).expect("a checkpoint");
        }
        let lock_path = run.join("recipe.lock");
        let mut lock: Value = serde_json::from_slice(&std::fs::read(&lock_path).unwrap()).unwrap();
        lock.as_object_mut().unwrap().remove("final");
        std::fs::write(&lock_path, serde_json::to_vec_pretty(&lock).unwrap()).unwrap();
        let out = recipe(&["run", "--resume", path(&run), "--quiet"]);
        assert_eq!(code(&out), 0, "resume after po step {cut}: {}", stderr(&out));
        assert_eq!(trace(&run), trace(&whole), "trace after po step {cut}");
        assert!(weights(&run) == weights(&whole), "final weights after po step {cut}");
    }
    let run = dir.join("tampered");
    copy_dir(&whole, &run);
    std::fs::remove_dir_all(run.join("checkpoints/01-po-step000004")).unwrap();
    let lock_path = run.join("recipe.lock");
    let mut lock: Value = serde_json::from_slice(&std::fs::read(&lock_path).unwrap()).unwrap();
    lock.as_object_mut().unwrap().remove("final");
    lock["references"][0]["sha256"] = Value::from("0".repeat(64));
    std::fs::write(&lock_path, serde_json::to_vec_pretty(&lock).unwrap()).unwrap();
    let out = recipe(&["run", "--resume", path(&run), "--quiet"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("reference of stage `po` (sft.model) differs"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rows that cannot train are refused before compute, naming the row; a dataset without the
/// fields is a check error.
#[test]
fn bad_preference_rows_are_refused_before_compute() {
    let dir = scratch("bad-rows");
    let recipe_text = std::fs::read_to_string(root().join("tests/e2e/tiny_preference.recipe")).unwrap();
    let file = dir.join("t.recipe");
    std::fs::write(&file, &recipe_text).unwrap();
    let row = |p: &str, c: &str, r: &str| serde_json::json!({"prompt": p, "chosen": c, "rejected": r}).to_string();
    for (rows, message) in [
        // Context 16: 4 + 12 + EOS positions.
        (vec![row("1+1=", "2", "3"), row("2+2=", "4", "123456789012")], "pairs.jsonl:2 needs 17 positions"),
        (vec![row("1+1=", "2", "3"), row("", "4", "5")], "pairs.jsonl:2 has an empty `prompt`"),
    ] {
        std::fs::write(dir.join("pairs.jsonl"), rows.join("\n") + "\n").unwrap();
        let out = recipe(&["run", path(&file), "--quiet", "--out", path(&dir.join("run"))]);
        assert_eq!(code(&out), 3, "{}", stderr(&out));
        assert!(stderr(&out).contains(message), "{message}: {}", stderr(&out));
        assert!(!dir.join("run/metrics.jsonl").exists(), "refused before the first step");
        let _ = std::fs::remove_dir_all(dir.join("run"));
    }
    let no_rejected = recipe_text.replace("chosen: String, rejected: String", "chosen: String");
    std::fs::write(&file, no_rejected).unwrap();
    let out = recipe(&["run", path(&file), "--quiet", "--out", path(&dir.join("run"))]);
    assert_eq!(code(&out), 1, "a check error: {}", stderr(&out));
    assert!(stderr(&out).contains("`rejected` (String or Messages)"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

fn fixtures() -> PathBuf {
    let base =
        std::env::var_os("RECIPE_FIXTURES").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/fixtures"));
    assert!(base.join("preference_losses_reference.json").is_file(), "fixtures not found at {}", base.display());
    base
}

/// The fixture's pairs as TRL's dataset rows (their recorded texts end in the EOS text "\n",
/// which the collator appends), in a JSONL file.
fn fixture_pairs(dir: &Path) -> (PathBuf, Value) {
    let fx: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("preference_losses_reference.json")).unwrap()).unwrap();
    let strip = |v: &Value| v.as_str().unwrap().strip_suffix('\n').expect("ends with EOS text").to_string();
    let rows: Vec<String> = fx["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            serde_json::json!({"prompt": p["prompt"], "chosen": strip(&p["chosen"]), "rejected": strip(&p["rejected"])})
                .to_string()
        })
        .collect();
    let file = dir.join("pairs.jsonl");
    std::fs::write(&file, rows.join("\n") + "\n").unwrap();
    (file, fx)
}

fn loss_json(data: &Path, expr: &str, extra: &[&str]) -> Value {
    let fx = fixtures();
    let (policy, reference) = (fx.join("tiny-llama-sft5"), fx.join("tiny-llama"));
    let mut args = vec!["loss", "--policy", path(&policy), "--reference", path(&reference)];
    args.extend(["--data", path(data), "--loss", expr, "--json"]);
    args.extend(extra);
    let out = recipe(&args);
    assert_eq!(code(&out), 0, "{expr}: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a line")).expect("the last line is JSON")
}

fn case<'a>(fx: &'a Value, name: &str) -> &'a Value {
    fx["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("case {name}"))
}

#[test]
fn recipe_loss_matches_trl_on_the_fixture() {
    let dir = scratch("loss");
    let (data, fx) = fixture_pairs(&dir);
    let got = loss_json(&data, "dpo(beta = 0.1)", &[]);
    let sigmoid = case(&fx, "sigmoid");
    let relative = |key: &str, want: f64| (got[key].as_f64().expect(key) - want).abs() / want.abs();
    assert!(relative("loss", 0.6607063) < 1e-5, "{got}");
    assert!(relative("grad_norm", 0.51341305) < 1e-4, "{got}");
    assert!(relative("loss", sigmoid["loss"].as_f64().unwrap()) < 1e-5);
    assert!(relative("grad_norm", sigmoid["grad_norm"].as_f64().unwrap()) < 1e-4);
    assert_eq!(got["pairs"], 16);
    let trl = sigmoid["trl_logged_metrics"].as_object().unwrap();
    for name in ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen"] {
        let (g, w) = (got[name].as_f64().expect(name), trl[name].as_f64().unwrap());
        assert!((g - w).abs() < 1e-4, "{name}: {g} against TRL's {w}");
    }
    assert!(got["loss/dpo"].as_f64().is_some());

    // A scheduled beta, evaluated at `--step` of `--total`: 0.1 at step 0 of 2.
    let scheduled = loss_json(&data, "dpo(beta = interpolate(0.1, 0.3))", &["--step", "0", "--total", "2"]);
    assert!((scheduled["loss"].as_f64().unwrap() - got["loss"].as_f64().unwrap()).abs() < 1e-7, "{scheduled}");
    let later = loss_json(&data, "dpo(beta = interpolate(0.1, 0.3))", &["--step", "1", "--total", "2"]);
    let fixed = loss_json(&data, "dpo(beta = 0.2)", &[]);
    assert!((later["loss"].as_f64().unwrap() - fixed["loss"].as_f64().unwrap()).abs() < 1e-7, "{later}");
    let rewards = |v: &Value| v["rewards/chosen"].as_f64().unwrap();
    assert!((rewards(&later) - 2.0 * rewards(&got)).abs() < 1e-5, "rewards use the scheduled beta: {later}");

    // A recipe's own loss, written as a lambda over the batch, through `--recipe`.
    let file = dir.join("mine.recipe");
    std::fs::write(
        &file,
        "recipe \"mine\" { seed = 1 }\nlet half = 0.5\n\
         fn twice_dpo(beta: Float = 0.1) -> Loss = |b| 2.0 * dpo(beta = beta)(b)\n",
    )
    .unwrap();
    let mine = loss_json(&data, "half * twice_dpo()", &["--recipe", path(&file)]);
    assert!((mine["loss"].as_f64().unwrap() - got["loss"].as_f64().unwrap()).abs() < 1e-6, "{mine}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn recipe_loss_refuses_bad_input_with_the_projects_exit_codes() {
    let dir = scratch("loss-bad");
    let (data, _) = fixture_pairs(&dir);
    let policy = fixtures().join("tiny-llama-sft5");
    let run =
        |data: &Path, expr: &str| recipe(&["loss", "--policy", path(&policy), "--data", path(data), "--loss", expr]);
    // Text output; the reference defaults to the policy, so DPO is ln 2.
    let out = run(&data, "dpo()");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("16 pairs") && stdout.contains("grad_norm") && stdout.contains("0.693147"), "{stdout}");

    let out = run(&dir.join("missing.jsonl"), "dpo()");
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.jsonl"), "{}", stderr(&out));
    let malformed = dir.join("malformed.jsonl");
    std::fs::write(&malformed, "{\"prompt\": \"1+1=\", \"chosen\": \"2\", \"rejected\": \"3\"}\n{\"prompt\": 1}\n")
        .unwrap();
    let out = run(&malformed, "dpo()");
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("malformed.jsonl:2"), "{}", stderr(&out));
    let long = dir.join("long.jsonl");
    let row = serde_json::json!({"prompt": "1".repeat(600), "chosen": "2", "rejected": "3"});
    std::fs::write(&long, format!("{row}\n")).unwrap();
    let out = run(&long, "dpo()");
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("long.jsonl:1 needs 602 positions"), "{}", stderr(&out));

    for bad in ["dpo(bta = 0.1)", "dpo(", "nothing_here()", "1.0"] {
        let out = run(&data, bad);
        assert_eq!(code(&out), 1, "{bad}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{bad}: {}", stderr(&out));
    }
    let out =
        recipe(&["loss", "--policy", path(&policy), "--data", path(&data), "--loss", "dpo()", "--recipe", "no.recipe"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let out = recipe(&["loss", "--policy", path(&dir), "--data", path(&data), "--loss", "dpo()"]);
    assert_eq!(code(&out), 3, "not a model folder: {}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
