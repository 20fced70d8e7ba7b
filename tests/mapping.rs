//! End to end: rows whose fields are not TRL's (GSM8K's `question`/`answer`) are refused by
//! `recipe check` at the stage's dataset argument, and trained on after `map`.

mod common;

use common::{code, recipe, recipe_in, root, scratch, stderr, trace};

#[test]
fn mapped_rows_train() {
    let out = recipe(&["check", "tests/e2e/map_sft.recipe"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let run = scratch("map-sft");
    let out = recipe(&["run", "tests/e2e/map_sft.recipe", "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines = trace(&run);
    let steps: Vec<f64> = lines.iter().filter(|l| l["stage"] == "sft").filter_map(|l| l["loss"].as_f64()).collect();
    assert_eq!(steps.len(), 2, "two SFT steps: {lines:?}");
    assert!(steps.iter().all(|l| l.is_finite() && *l > 0.0), "{steps:?}");
    assert!(lines.iter().any(|l| l.get("eval").is_some()), "the evaluation over mapped rows ran");
}

#[test]
fn unmapped_rows_are_a_check_error_at_the_dataset() {
    let dir = scratch("unmapped");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root().join("tests/e2e/gsm8k_tiny.jsonl"), dir.join("gsm8k_tiny.jsonl")).unwrap();
    let text = std::fs::read_to_string(root().join("tests/e2e/map_sft.recipe")).unwrap();
    let text = text.replace("sft(policy, train,", "sft(policy, gsm,");
    std::fs::write(dir.join("unmapped.recipe"), text).unwrap();
    for command in [&["check", "unmapped.recipe"][..], &["run", "unmapped.recipe", "--quiet"]] {
        let out = recipe_in(&dir, command);
        let err = stderr(&out);
        assert_ne!(code(&out), 0, "{command:?}: {err}");
        assert!(
            err.contains("recipe::call::missing_field") && err.contains("unmapped.recipe:13:25"),
            "{command:?}: {err}"
        );
        assert!(err.contains("map(data, |r|"), "{command:?}: the help says how: {err}");
    }
}
