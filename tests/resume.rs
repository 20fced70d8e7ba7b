//! Kill -9 and `--resume`: a run killed as soon as a checkpoint exists and resumed ends exactly
//! as an uninterrupted one (metrics trace, every checkpoint byte for byte, the TensorBoard
//! events), through SFT, exclusive buckets, a transform into rounds, `rl` stages with reused
//! rollouts and online curricula, and `rounds` blocks of self-generated pairs.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn resume_after_kill_matches_an_uninterrupted_run() {
    resume_matches("tests/e2e/tiny_sft.recipe", &["00-sft-step000001", "00-sft-step000003", "00-sft-step000005"]);
}

/// The same with curricula: SFT in two exclusive difficulty buckets (a round each, three steps
/// each), then pretraining under a pacing curriculum; killed in the middle of the first bucket,
/// at its end (the next round starts from its checkpoint), in the middle of the second, and
/// during the pacing.
#[test]
fn resume_after_kill_in_the_middle_of_a_bucket_matches_an_uninterrupted_run() {
    let markers = ["00-easy-r00-step000002", "00-easy-r00-step000003", "00-easy-r01-step000002", "01-lm-step000002"];
    resume_matches("tests/e2e/tiny_curriculum.recipe", &markers);
}

/// The same through a transform into rounds: a score stage's rows and model trained by SFT in two
/// exclusive buckets; killed in the first round, at its end and in the second. The resumed run
/// computes the score stage's rows again (without logging them twice) and re-binds the stage.
#[test]
fn resume_after_kill_through_a_score_stage_into_rounds_matches_an_uninterrupted_run() {
    let markers = ["01-easy-r00-step000001", "01-easy-r00-step000002", "01-easy-r01-step000001"];
    resume_matches("tests/e2e/score_rounds.recipe", &markers);
}

/// The same through an `rl` stage that trains twice on each sampled batch (TRL's
/// `num_iterations = 2`): killed after the first of a batch's two steps (the rollouts and their
/// sampling log-probabilities are restored from the checkpoint, not sampled again) and after
/// the second.
#[test]
fn resume_after_kill_inside_an_rl_stage_matches_an_uninterrupted_run() {
    resume_matches("tests/e2e/tiny_rl.recipe", &["01-rl-step000001", "01-rl-step000002", "01-rl-step000005"]);
}

/// A `rounds` block of self-generated pairs and DPO, then SFT from the block's model: each round
/// samples from the previous round's model, writes its pairs to the run folder (hashed in the
/// lock) with one event line, trains against that model as its reference, and labels its
/// checkpoints and metrics lines with the round; the run replays. Killed in round 0, at its end
/// (round 1 samples from its checkpoint), in round 1 and after the block, a resumed run matches
/// an uninterrupted one.
#[test]
fn rounds_of_self_generated_pairs_run_verify_and_resume() {
    let run = scratch("self-rounds");
    let out = recipe(&["run", "tests/e2e/self_rounds.recipe", "--quiet", "--out", run.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let whole = trace(&run);
    let events: Vec<&Value> = whole.iter().filter(|l| l["event"] == "self_pairs").collect();
    assert_eq!(events.iter().map(|e| e["round"].as_u64()).collect::<Vec<_>>(), [Some(0), Some(1)], "{whole:?}");
    let mut files = Vec::new();
    for (round, event) in events.iter().enumerate() {
        let name = format!("{:02}-pairs-r{round:02}", 1 + 2 * round);
        let rows = data_rows(&run, &name);
        assert!(!rows.is_empty(), "round {round} made pairs: {event}");
        assert_eq!(rows.len() as u64, event["pairs"].as_u64().unwrap());
        assert_eq!(event["pairs"].as_u64().unwrap() + event["dropped"].as_u64().unwrap(), 24, "{event}");
        for row in &rows {
            let bytes = |f: &str| row[f].as_str().unwrap_or_else(|| panic!("`{f}` in {row}")).len();
            assert!(bytes("chosen") % 2 == 0 && bytes("rejected") % 2 == 1, "judged by parity: {row}");
            assert!(row["answer"].is_string(), "the input's fields are kept: {row}");
        }
        files.push(format!("data/{name}.jsonl"));
    }
    for round in 0..2u64 {
        let steps: Vec<u64> = whole
            .iter()
            .filter(|l| l["stage"] == "dpo" && l["round"].as_u64() == Some(round) && l["loss"].is_number())
            .filter_map(|l| l["step"].as_u64())
            .collect();
        assert_eq!(steps, [1, 2, 3], "round {round}");
    }
    assert!(
        run.join("checkpoints/04-dpo-r01-step000003").exists() && run.join("checkpoints/05-polish-step000002").exists()
    );
    let lock: Value = serde_json::from_slice(&std::fs::read(run.join("recipe.lock")).unwrap()).unwrap();
    let generated: Vec<&str> =
        lock["generated"].as_array().unwrap().iter().filter_map(|g| g["path"].as_str()).collect();
    assert_eq!(generated, files);
    let references: Vec<&str> =
        lock["references"].as_array().unwrap().iter().filter_map(|r| r["model"].as_str()).collect();
    assert_eq!(references, ["sft.model", "round 1 of `dpo`"], "each round scores against its input");
    let out = recipe(&["verify", run.to_str().unwrap(), "--quiet"]);
    assert_eq!(code(&out), 0, "the rounds replay: {}", stderr(&out));
    let _ = std::fs::remove_dir_all(&run);

    let markers = ["02-dpo-r00-step000002", "02-dpo-r00-step000003", "04-dpo-r01-step000001", "05-polish-step000001"];
    resume_matches("tests/e2e/self_rounds.recipe", &markers);
}

/// The same through `rl` stages under online curricula whose state a resume restores: a
/// Boltzmann bandit (arm values, counts), a refilling band-pass filter and a replay bank.
#[test]
fn resume_after_kill_through_online_curricula_matches_an_uninterrupted_run() {
    let markers = ["01-arms-step000002", "02-band-step000001", "02-band-step000003", "03-bank-step000002"];
    resume_matches("tests/e2e/rl_curricula.recipe", &markers);
}

/// Runs `recipe` whole, then again killed (SIGKILL) as soon as each checkpoint of `markers`
/// exists, resumes it with `--resume`, and compares the metrics (timing aside) and every
/// checkpoint's model byte for byte.
fn resume_matches(recipe_file: &str, markers: &[&str]) {
    let stem = Path::new(recipe_file).file_stem().unwrap().to_string_lossy().into_owned();
    let whole = scratch(&format!("whole-{stem}"));
    let out = recipe(&["run", recipe_file, "--quiet", "--out", whole.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let checkpoints = |run: &Path| -> Vec<(String, Vec<u8>)> {
        let mut names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
            .expect("checkpoints/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let weights = std::fs::read(run.join("checkpoints").join(&n).join("model/model.safetensors"));
                (n, weights.expect("a checkpoint's weights"))
            })
            .collect()
    };
    let expected = checkpoints(&whole);
    for &marker in markers {
        assert!(expected.iter().any(|(n, _)| n == marker), "{stem}: no checkpoint {marker}");
        // Kill as soon as the marker exists; wherever the kill lands, resuming must give the same result.
        let run = scratch(&format!("killed-{stem}-{marker}"));
        let mut child = Command::new(RECIPE)
            .args(["run", recipe_file, "--quiet", "--out", run.to_str().unwrap()])
            .current_dir(root())
            .spawn()
            .expect("spawn");
        let marker_dir = run.join("checkpoints").join(marker);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !marker_dir.exists() && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let out = recipe(&["run", "--resume", run.to_str().unwrap(), "--quiet"]);
        assert_eq!(code(&out), 0, "{stem}: resume after {marker}: {}", stderr(&out));
        assert_eq!(trace(&run), trace(&whole), "{stem}: trace after a kill near {marker}");
        assert_events_mirror_metrics(&run);
        assert!(checkpoints(&run) == expected, "{stem}: checkpoints after a kill near {marker}");
        let _ = std::fs::remove_dir_all(&run);
    }
    let _ = std::fs::remove_dir_all(&whole);
}
