//! End-to-end tests of online RL through the `recipe` command: an `rl` stage run by `recipe run`
//! (TRL's metric names, unscored rewards left out, iterations reusing rollouts, verify), errors
//! before compute and during it, and `recipe loss --rollouts` on the TRL fixture
//! (`../shared/fixtures/grpo_loss_reference.json`).

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `tests/e2e/tiny_rl.recipe` with `from` replaced by `to`, written into `dir`.
fn variant(dir: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("tests/e2e/tiny_rl.recipe")).expect("the recipe");
    assert!(text.contains(from), "`{from}` is in the recipe");
    let file = dir.join("variant.recipe");
    std::fs::write(&file, text.replace(from, to)).expect("write");
    file
}

/// TRL's `GRPOTrainer` metric names, logged at every step.
const METRICS: [&str; 13] = [
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "completions/mean_length",
    "completions/clipped_ratio",
    "kl",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "clip_ratio/region_mean",
    "rewards/unscored",
    "groups/kept",
    "loss/grpo",
    "entropy",
];

#[test]
fn an_rl_stage_runs_end_to_end_and_verifies() {
    let dir = scratch_dir("run");
    let run = dir.join("run");
    let file = root().join("tests/e2e/tiny_rl.recipe");
    assert_eq!(code(&recipe(&["check", "--strict", path(&file)])), 0, "`rl` is executable");
    let out = recipe(&["run", path(&file), "--quiet", "--out", path(&run)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines = lines_of(&run, "rl");
    assert_eq!(lines.len(), 6, "one line per step");
    // Steps 2, 4, 6 train again on the rollouts of steps 1, 3, 5 (iterations = 2): they log the
    // loss's metrics but not the sampling ones again, and their ratio is no longer 1.
    for (i, line) in lines.iter().enumerate() {
        let sampled = i % 2 == 0;
        for name in METRICS {
            let sampling =
                !name.starts_with("loss/") && !name.starts_with("clip_ratio/") && !["kl", "entropy"].contains(&name);
            let logged = line[name].as_f64().is_some_and(f64::is_finite);
            assert!(logged || (sampling && !sampled), "{name} in {line}");
            assert!(!(sampling && !sampled && logged), "{name} is logged once per sampled batch: {line}");
        }
        assert!((line["loss"].as_f64().unwrap() - line["loss/grpo"].as_f64().unwrap()).abs() < 1e-6, "{line}");
    }
    let unscored: f64 = lines.iter().filter_map(|l| l["rewards/unscored"].as_f64()).sum();
    assert!(unscored > 0.0, "the reward's NaNs are counted, not scored");
    let off_policy: Vec<f64> = lines.iter().skip(1).step_by(2).map(|l| l["loss"].as_f64().unwrap().abs()).collect();
    assert!(off_policy.iter().any(|l| *l > 1e-6), "a reused batch's ratio moved: {off_policy:?}");
    assert!(lines.iter().any(|l| l["kl"].as_f64().unwrap() > 0.0), "the policy moves away from its reference");
    let out = recipe(&["verify", path(&run), "--quiet"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Recipe problems that need no compute are refused before any step, at the argument.
#[test]
fn rl_stages_are_checked_before_compute() {
    let dir = scratch_dir("check");
    let run = dir.join("run");
    let long = variant(&dir, "max_tokens = 4", "max_tokens = 14");
    let out = recipe(&["run", path(&long), "--quiet", "--out", path(&run)]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("needs 18 positions") && err.contains("`max_tokens` = 14") && err.contains("has 16"), "{err}");
    assert!(!run.join("metrics.jsonl").exists() || lines_of(&run, "sft").is_empty(), "no step ran");

    // An advantage estimator that reads log-probabilities has none to read yet.
    let file = variant(
        &dir,
        "    group = 4,",
        "    advantages = |b: RolloutBatch| sum_per_seq(b.token_logps),\n    group = 4,",
    );
    let out = recipe(&["run", path(&file), "--quiet", "--out", path(&dir.join("adv"))]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("reads `token_logps`"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An infinite reward stops the stage naming the step and the example; what was written stays.
#[test]
fn an_infinite_reward_stops_the_stage_naming_the_example() {
    let dir = scratch_dir("inf");
    let run = dir.join("run");
    let file = variant(&dir, "float(len(trim(r.completion))) }", "exp(1000.0 + float(r.tokens)) }");
    let out = recipe(&["run", path(&file), "--quiet", "--out", path(&run)]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("stage `rl`, step 1: a reward is inf (examples"), "{err}");
    assert_eq!(lines_of(&run, "sft").len(), 4, "the SFT stage's metrics are kept");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `recipe loss --rollouts` on TRL's own batch gives TRL's numbers for every `scale_rewards`.
#[test]
fn recipe_loss_on_rollouts_gives_trls_numbers() {
    let fixtures =
        std::env::var_os("RECIPE_FIXTURES").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/fixtures"));
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("grpo_loss_reference.json")).unwrap()).unwrap();
    let dir = scratch_dir("loss");
    let file = dir.join("rollouts.jsonl");
    let g = fx["num_generations"].as_u64().unwrap() as usize;
    let rows: Vec<String> = fx["completion_ids_unpadded"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, ids)| {
            let row = serde_json::json!({
                "prompt": fx["prompts"][i / g],
                "completion_ids": ids,
                "reward": fx["rewards"][i],
            });
            row.to_string()
        })
        .collect();
    std::fs::write(&file, rows.join("\n")).unwrap();
    let (policy, reference) = (fixtures.join("tiny-llama-sft5"), fixtures.join("tiny-llama"));
    for scale in ["group", "batch", "none"] {
        let case = fx["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == format!("grpo / scale_rewards={scale}"))
            .unwrap();
        let out = recipe(&[
            "loss",
            "--policy",
            path(&policy),
            "--reference",
            path(&reference),
            "--rollouts",
            path(&file),
            "--scale",
            scale,
            "--loss",
            "grpo(eps_high = 0.28, beta = 0.04)",
            "--max-tokens",
            "6",
            "--json",
        ]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let got: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let close = |k: &str, want: f64, rel: f64| {
            let v = got[k].as_f64().unwrap_or_else(|| panic!("{k} in {got}"));
            assert!((v - want).abs() <= rel * want.abs().max(1e-6), "{scale}: {k} {v} against TRL's {want}");
        };
        close("loss", case["loss"].as_f64().unwrap(), 1e-5);
        close("grad_norm", case["grad_norm"].as_f64().unwrap(), 1e-4);
        close("kl", case["mean_kl"].as_f64().unwrap(), 1e-5);
        for k in
            ["reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "completions/clipped_ratio"]
        {
            close(k, case["trl_logged_metrics"][k].as_f64().unwrap(), 1e-6);
        }
        let advantages = got["advantages"].as_array().unwrap();
        for (a, want) in advantages.iter().zip(fx["advantages"][scale].as_array().unwrap()) {
            assert!((a.as_f64().unwrap() - want.as_f64().unwrap()).abs() < 1e-5, "{scale}: {a} vs {want}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
