//! What the transforms that generate with their policy share (`contrast_pairs`, `self_pairs`):
//! prompts encoded and checked against the policy's context before compute, and batched,
//! KV-cached completions decoded up to the first stop id.

use crate::data::Dataset;
use crate::exec::ExecError;
use crate::model::{self, CausalLm, GenerateOptions, Tokenizer};
use crate::rng::Rng;
use std::sync::Arc;

/// Prompts generated from per batch.
const PROMPTS_PER_BATCH: usize = 32;

/// The token ids of every prompt (`prompts[r]` belongs to row `r` of `data`; `what` names them
/// in errors: "prompt", "perturbed prompt"), refusing the first row whose prompt encodes to no
/// token (generation needs one to start from) or needs more than `context` positions with
/// `max_tokens` new tokens.
pub(super) fn encode_fitting(
    stage: &str,
    what: &str,
    data: &Dataset,
    prompts: &[Arc<str>],
    tok: &Tokenizer,
    context: usize,
    max_tokens: usize,
) -> Result<Vec<Vec<u32>>, ExecError> {
    let mut ids = Vec::with_capacity(prompts.len());
    for (row, prompt) in prompts.iter().enumerate() {
        let encoded = tok.encode(prompt)?;
        if encoded.is_empty() {
            return Err(ExecError::Config(format!(
                "stage `{stage}`: the {what} of {} is empty; generation needs at least one prompt token",
                data.row_name(row)
            )));
        }
        let len = encoded.len() + max_tokens;
        if len > context {
            return Err(ExecError::Config(format!(
                "stage `{stage}`: {} needs {len} positions (a {what} of {} tokens and `max_tokens` = {max_tokens} \
                 new tokens) but the model has {context} (its `context` / max_position_embeddings); shorten or \
                 leave out such rows, lower `max_tokens`, or use a longer context",
                data.row_name(row),
                encoded.len()
            )));
        }
        ids.push(encoded);
    }
    Ok(ids)
}

/// The policy's completion of each prompt under `opts`, prompt `i` sampling from `streams[i]`
/// (so its text does not depend on the prompts batched with it): at most `opts.max_new_tokens`
/// new tokens, ending at the first stop id, decoded without it; [`PROMPTS_PER_BATCH`] prompts
/// per batch.
///
/// Errors: generation's (an invalid temperature, a stream count other than the prompt count).
pub(super) fn completions(
    policy: &CausalLm,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    streams: &mut [Rng],
) -> Result<Vec<Arc<str>>, ExecError> {
    if streams.len() != prompts.len() {
        return Err(ExecError::Internal(format!("{} sampling streams for {} prompts", streams.len(), prompts.len())));
    }
    let tok = policy.tokenizer();
    let mut out = Vec::with_capacity(prompts.len());
    for (chunk, streams) in prompts.chunks(PROMPTS_PER_BATCH).zip(streams.chunks_mut(PROMPTS_PER_BATCH)) {
        for mut generated in model::generate_streams(policy, chunk, opts, streams)? {
            if let Some(end) = generated.iter().position(|&t| tok.is_stop(t)) {
                generated.truncate(end);
            }
            out.push(Arc::from(tok.decode(&generated)));
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::{Device, LlamaConfig};
    use recipe_compiler::column::Column;

    pub fn texts(values: &[&str]) -> Vec<Arc<str>> {
        values.iter().map(|&s| Arc::from(s)).collect()
    }

    /// A tiny untrained byte-level model with `context` positions.
    pub fn tiny_model(seed: u64, context: usize) -> CausalLm {
        let cfg = LlamaConfig {
            vocab_size: 257,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 2,
            max_position_embeddings: context,
            ..LlamaConfig::default()
        };
        CausalLm::tiny(cfg, &mut Rng::derive(seed, "init"), &Device::Cpu).unwrap().into_frozen()
    }

    #[test]
    fn prompts_that_do_not_fit_are_refused_by_row() {
        let data = Dataset::new("t", vec![5, 6], vec![("prompt".into(), Column::Str(texts(&["ab", "cd"])))]).unwrap();
        let tok = Tokenizer::bytes();
        let ids = encode_fitting("s", "prompt", &data, &texts(&["123", "4"]), &tok, 8, 5).unwrap();
        assert_eq!(ids, [vec![49, 50, 51], vec![52]]);
        let err = encode_fitting("s", "prompt", &data, &texts(&["1", "1234"]), &tok, 8, 5).unwrap_err().to_string();
        assert!(err.contains("row 6 of t needs 9 positions (a prompt of 4 tokens"), "{err}");
        let err = encode_fitting("s", "perturbed prompt", &data, &texts(&["", "1"]), &tok, 8, 5).unwrap_err();
        assert!(err.to_string().contains("the perturbed prompt of row 5 of t is empty"), "{err}");
    }

    /// A prompt's sampled completion depends on its own stream only, not on its batch.
    #[test]
    fn sampled_completions_follow_their_own_streams() {
        let model = tiny_model(7, 32);
        let tok = model.tokenizer().clone();
        let prompts: Vec<Vec<u32>> = (0..40).map(|i| tok.encode(&format!("{i}+{}=", i % 7)).unwrap()).collect();
        let opts = GenerateOptions { max_new_tokens: 6, temperature: 1.0, top_p: 1.0, stop_at_eos: true };
        let stream = |i: usize| Rng::derive(1, &format!("row/{i}"));
        let mut streams: Vec<Rng> = (0..40).map(stream).collect();
        let all = completions(&model, &prompts, &opts, &mut streams).unwrap();
        assert_eq!(all.len(), 40);
        for row in [0, 33] {
            let alone = completions(&model, &prompts[row..=row], &opts, &mut [stream(row)]).unwrap();
            assert_eq!(all[row], alone[0], "row {row}");
        }
        assert!(completions(&model, &prompts, &opts, &mut streams[..3]).is_err());
    }
}
