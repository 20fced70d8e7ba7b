//! End-to-end tests of `recipe compare` and of `recipe run --seeds` / `--control`: the lock
//! difference in recipe terms with its equal-compute flag, seed sub-folders, the method and
//! control sweep with its comparison page, and the exit code of a path that is not a run.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

const TINY: &str = "tests/e2e/tiny_sft.recipe";

fn run(out: &Path, extra: &[&str]) {
    let mut args = vec!["run", TINY, "--max-steps", "2", "--quiet", "--out", path(out)];
    args.extend_from_slice(extra);
    let result = recipe(&args);
    assert_eq!(code(&result), 0, "{}", stderr(&result));
}

fn compare_json(args: &[&str]) -> Value {
    let mut all = vec!["compare", "--json"];
    all.extend_from_slice(args);
    let out = recipe(&all);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("compare --json prints one JSON object")
}

fn entry<'a>(comparison: &'a Value, path: &str) -> Option<&'a Value> {
    comparison["diff"].as_array().expect("diff").iter().find(|e| e["path"] == path)
}

#[test]
fn compare_says_what_differs_and_flags_unequal_compute() {
    let (a, b, c) = (scratch("cmp-a"), scratch("cmp-b"), scratch("cmp-c"));
    run(&a, &[]);
    run(&b, &["--set", "beta1=0.8"]);
    run(&c, &["--set", "seed=5"]);
    let ab = compare_json(&[path(&a), path(&b)]);
    let beta = entry(&ab, "stage sft: adam_beta1").expect("the optimiser difference");
    assert_eq!(beta["values"], serde_json::json!(["0.9", "0.8"]));
    assert_eq!(beta["breaks_equal_compute"], true);
    assert_eq!(ab["equal_compute"][0]["path"], "stage sft: adam_beta1");
    assert!(entry(&ab, "seed").is_none(), "same seed");
    let loss = ab["metrics"].as_array().unwrap().iter().find(|m| m["name"] == "sft/loss").expect("sft/loss");
    assert_eq!(loss["best_is"], "min");
    assert_eq!(loss["arms"].as_array().unwrap().len(), 2);
    assert!(loss["arms"][0]["final"]["mean"].is_number());
    let ac = compare_json(&[path(&a), path(&c)]);
    assert_eq!(entry(&ac, "seed").expect("the seed differs")["values"], serde_json::json!(["3", "5"]));
    assert!(ac["equal_compute"].as_array().unwrap().is_empty(), "another seed is equal compute");
    // --metric keeps one metric; an unknown one is a usage error.
    let only = compare_json(&["--metric", "loss", path(&a), path(&b)]);
    assert_eq!(only["metrics"].as_array().unwrap().len(), 1);
    assert_eq!(code(&recipe(&["compare", "--metric", "nope", path(&a), path(&b)])), 2);
    let html = scratch_dir("cmp-html").join("compare.html");
    assert_eq!(code(&recipe(&["compare", path(&a), path(&b), "--out", path(&html)])), 0);
    let page = std::fs::read_to_string(&html).expect("compare.html");
    assert!(page.contains("class=\"bad\">stage sft: adam_beta1"), "flagged in red");
}

#[test]
fn a_path_that_is_not_a_run_exits_3() {
    let a = scratch("notrun-a");
    run(&a, &[]);
    let empty = scratch_dir("notrun-empty");
    let out = recipe(&["compare", path(&a), path(&empty)]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a run folder"), "{}", stderr(&out));
    assert_eq!(code(&recipe(&["compare", path(&a), "/nonexistent/run"])), 3);
    assert_eq!(code(&recipe(&["compare"])), 2, "no runs is a usage error");
}

#[test]
fn seeds_run_into_sub_folders_with_their_own_seed() {
    let out = scratch("seeds");
    run(&out, &["--seeds", "2"]);
    for seed in [1u64, 2] {
        let lock: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("seed-{seed}/recipe.lock"))).expect("a lock per seed"),
        )
        .expect("JSON");
        assert_eq!(lock["seed"], seed);
    }
    // The folder of seed runs is a group: n = 2, its seeds listed.
    let group = compare_json(&[path(&out)]);
    assert_eq!(group["runs"][0]["seeds"], serde_json::json!([1, 2]));
    let loss = group["metrics"].as_array().unwrap().iter().find(|m| m["name"] == "sft/loss").expect("sft/loss");
    assert_eq!(loss["arms"][0]["final"]["n"], 2);
    let bad = recipe(&["run", TINY, "--seeds", "1,1", "--out", path(&scratch("seeds-bad"))]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
}

#[test]
fn control_runs_method_and_control_and_compares_them() {
    let out = scratch("control");
    run(&out, &["--control", "beta1=0.8", "--seeds", "1,2"]);
    for arm in ["method", "control"] {
        for seed in [1, 2] {
            assert!(out.join(format!("{arm}/seed-{seed}/recipe.lock")).is_file(), "{arm} seed {seed}");
        }
    }
    let page = std::fs::read_to_string(out.join("compare.html")).expect("compare.html");
    assert!(page.contains("stage sft: adam_beta1"));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).expect("compare.json")).expect("JSON");
    let beta = entry(&json, "stage sft: adam_beta1").expect("the control's difference");
    assert_eq!(beta["values"], serde_json::json!(["0.9", "0.8"]));
    assert!(entry(&json, "seed").is_none(), "both arms ran seeds 1 and 2");
}
