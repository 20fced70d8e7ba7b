//! Batched, KV-cached generation: greedy, temperature and nucleus (top-p) sampling.
//!
//! Prompts are left-padded to a common length; each row keeps its own rotary positions
//! (`0..len` for its real tokens) and its pad slots are masked out of attention, so a row
//! generates the same tokens alone or in a batch. After the prefill, each step feeds one token
//! per row and reuses the cached keys and values, which the model's [`decode`] decoder keeps (a
//! hand-written pass on the CPU, candle's elsewhere). Rows that emit a stop id (when stopping: EOS or
//! any other of the tokenizer's stop ids) keep being fed PAD but their output is frozen; the loop
//! ends when every row is done.
//!
//! Invariant: all randomness is drawn from the caller's streams, one uniform per sampled token:
//! one stream for the whole batch, rows in order ([`generate`]), or one stream per row
//! ([`generate_streams`]: what a row samples then depends on its stream alone, not on the rows
//! batched with it), so a seeded run is reproducible.

use candle_core::Tensor;

use super::decode;
use super::llama::CausalLm;
use super::ModelError;
use crate::rng::Rng;

/// How to pick new tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 = greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Nucleus sampling mass in (0, 1]; 1 disables it.
    pub top_p: f64,
    /// Stop a row when it emits one of the tokenizer's stop ids ([`crate::model::Tokenizer::is_stop`]:
    /// the EOS and the extra stop ids); that id is included in its output.
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_new_tokens: 64, temperature: 0.0, top_p: 1.0, stop_at_eos: true }
    }
}

fn invalid(message: String) -> ModelError {
    ModelError::Candle(candle_core::Error::Msg(message))
}

/// Generates up to `max_new_tokens` for each prompt, drawing from one stream, rows in order;
/// returns only the new tokens per prompt.
///
/// Errors: an invalid temperature or top-p, an empty prompt, a token outside the vocabulary,
/// or a prompt too long for the model's positions.
pub fn generate(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    rng: &mut Rng,
) -> Result<Vec<Vec<u32>>, ModelError> {
    Ok(decode(model, prompts, opts, Streams::Shared(rng))?.into_iter().map(|s| s.ids).collect())
}

/// [`generate`] with one stream per prompt (`streams[i]` samples row `i`), so each row's tokens
/// depend on its own stream only, whatever it is batched with: what RL rollouts draw from
/// streams named after the seed, stage, step and row.
///
/// Errors: as [`generate`], and a stream count different from the prompt count.
pub fn generate_streams(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    streams: &mut [Rng],
) -> Result<Vec<Vec<u32>>, ModelError> {
    Ok(sample_streams(model, prompts, opts, streams)?.into_iter().map(|s| s.ids).collect())
}

/// One row's generated tokens, and the entropy (nats) of the distribution each was drawn from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub ids: Vec<u32>,
    /// Per generated token, the entropy of softmax(logits / temperature) (of the logits
    /// themselves when greedy): TRL's `entropy_from_logits` at the positions it logs `entropy`
    /// over, `[len]`.
    pub entropies: Vec<f32>,
}

/// [`generate_streams`] that also reports each token's sampling entropy (what an RL stage logs
/// as TRL's `entropy`).
///
/// Errors: as [`generate_streams`].
pub fn sample_streams(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    streams: &mut [Rng],
) -> Result<Vec<Sampled>, ModelError> {
    if streams.len() != prompts.len() {
        return Err(invalid(format!("{} sampling streams for {} prompts", streams.len(), prompts.len())));
    }
    decode(model, prompts, opts, Streams::PerRow(streams))
}

/// Where each sampled token's uniform comes from.
enum Streams<'r> {
    Shared(&'r mut Rng),
    PerRow(&'r mut [Rng]),
}

impl Streams<'_> {
    fn row(&mut self, b: usize) -> &mut Rng {
        match self {
            Streams::Shared(rng) => rng,
            Streams::PerRow(streams) => &mut streams[b],
        }
    }
}

fn decode(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    mut streams: Streams<'_>,
) -> Result<Vec<Sampled>, ModelError> {
    if !(opts.temperature >= 0.0 && opts.temperature.is_finite()) {
        return Err(invalid(format!("temperature must be finite and >= 0, got {}", opts.temperature)));
    }
    if !(opts.top_p > 0.0 && opts.top_p <= 1.0) {
        return Err(invalid(format!("top_p must be in (0, 1], got {}", opts.top_p)));
    }
    if prompts.is_empty() || opts.max_new_tokens == 0 {
        return Ok(vec![Sampled { ids: Vec::new(), entropies: Vec::new() }; prompts.len()]);
    }
    if prompts.iter().any(Vec::is_empty) {
        return Err(invalid("cannot generate from an empty prompt (the model has no BOS token)".into()));
    }
    let vocab = model.config().vocab_size as u32;
    if let Some(&t) = prompts.iter().flatten().find(|&&t| t >= vocab) {
        return Err(invalid(format!("prompt token {t} is outside the vocabulary of {vocab}")));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest + opts.max_new_tokens > model.max_positions() {
        return Err(invalid(format!(
            "prompt of {longest} tokens + {} new tokens exceeds max_position_embeddings {}",
            opts.max_new_tokens,
            model.max_positions()
        )));
    }

    let (batch, pad) = (prompts.len(), model.tokenizer().pad_id());
    // Each distinct prompt is prefilled once (an RL group repeats its prompt); its rows then
    // share the cache it filled.
    let mut distinct: Vec<&[u32]> = Vec::new();
    let mut first = std::collections::HashMap::new();
    let source: Vec<usize> = prompts
        .iter()
        .map(|p| {
            *first.entry(p.as_slice()).or_insert_with(|| {
                distinct.push(p);
                distinct.len() - 1
            })
        })
        .collect();
    let offsets: Vec<usize> = distinct.iter().map(|p| longest - p.len()).collect();
    let mut decoder = decode::for_model(model, offsets.clone(), longest + opts.max_new_tokens)?;

    // Prefill: all prompt slots at once; a row's positions count from its first real token.
    let mut ids = Vec::with_capacity(distinct.len() * longest);
    let mut positions = Vec::with_capacity(distinct.len() * longest);
    for (p, &offset) in distinct.iter().zip(&offsets) {
        ids.extend(std::iter::repeat_n(pad, offset).chain(p.iter().copied()));
        positions.extend((0..longest).map(|j| j.saturating_sub(offset) as u32));
    }
    let vocab = vocab as usize;
    let mut logits = decoder.forward(&ids, longest, &positions)?;
    if distinct.len() < batch {
        decoder.select_rows(&source)?;
        logits = source.iter().flat_map(|&d| logits[d * vocab..(d + 1) * vocab].to_vec()).collect();
    }

    let mut out: Vec<Sampled> = vec![Sampled { ids: Vec::new(), entropies: Vec::new() }; batch];
    let mut done = vec![false; batch];
    for step in 0..opts.max_new_tokens {
        let mut next = vec![pad; batch];
        for b in 0..batch {
            if done[b] {
                continue;
            }
            let row = &logits[b * vocab..(b + 1) * vocab];
            let tok = pick(row, opts, streams.row(b));
            out[b].ids.push(tok);
            out[b].entropies.push(entropy(row, opts.temperature) as f32);
            next[b] = tok;
            if opts.stop_at_eos && model.tokenizer().is_stop(tok) {
                done[b] = true;
            }
        }
        if done.iter().all(|&d| d) || step + 1 == opts.max_new_tokens {
            break;
        }
        let positions: Vec<u32> = (0..batch).map(|b| (prompts[b].len() + step) as u32).collect();
        logits = decoder.forward(&next, 1, &positions)?;
    }
    Ok(out)
}

/// The entropy (nats) of softmax(row / temperature), of the row itself when `temperature` is 0.
fn entropy(row: &[f32], temperature: f64) -> f64 {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let (mut z, mut weighted) = (0.0f64, 0.0f64);
    for &v in row {
        let x = (v as f64 - m) / t;
        let e = x.exp();
        z += e;
        weighted += e * x;
    }
    z.ln() - weighted / z
}

/// Greedy argmax of a logits row (the first maximum, as torch's argmax).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// One token from a logits row under `opts`.
fn pick(row: &[f32], opts: &GenerateOptions, rng: &mut Rng) -> u32 {
    if opts.temperature == 0.0 {
        return argmax(row);
    }
    let t = opts.temperature;
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(u32, f64)> =
        row.iter().enumerate().map(|(i, &v)| (i as u32, ((v as f64 - m) / t).exp())).collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    if opts.top_p < 1.0 {
        // Keep the most probable tokens until their mass reaches top_p (at least one).
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut mass = 0.0;
        let mut keep = 0;
        for p in &probs {
            keep += 1;
            mass += p.1;
            if mass >= opts.top_p {
                break;
            }
        }
        probs.truncate(keep);
    }
    let kept: f64 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.uniform() * kept;
    for &(tok, p) in &probs {
        if u < p {
            return tok;
        }
        u -= p;
    }
    probs.last().map_or(0, |p| p.0)
}

/// Plain uncached greedy decoding of one prompt: the full forward pass per token. The reference
/// the cached path is tested against; quadratic, so only for tests and tiny models.
pub fn greedy_uncached(model: &CausalLm, prompt: &[u32], max_new_tokens: usize) -> Result<Vec<u32>, ModelError> {
    let mut seq = prompt.to_vec();
    for _ in 0..max_new_tokens {
        let input = Tensor::from_vec(seq.clone(), (1, seq.len()), model.device())?;
        let logits = model.forward(&input)?.squeeze(0)?;
        let last: Vec<f32> = logits.get(seq.len() - 1)?.to_vec1()?;
        seq.push(argmax(&last));
    }
    Ok(seq[prompt.len()..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, LlamaConfig, ModelSpec, Tokenizer, TokenizerSpec, Vocab};

    #[test]
    fn entropy_is_of_the_tempered_distribution() {
        assert!((entropy(&[0.0; 4], 1.0) - 4f64.ln()).abs() < 1e-12, "uniform over 4: ln 4");
        let row = [2.0f32, 0.0, -1.0];
        let p: Vec<f64> = {
            let e: Vec<f64> = row.iter().map(|&v| (f64::from(v) / 0.5).exp()).collect();
            e.iter().map(|x| x / e.iter().sum::<f64>()).collect()
        };
        let want: f64 = -p.iter().map(|q| q * q.ln()).sum::<f64>();
        assert!((entropy(&row, 0.5) - want).abs() < 1e-12);
        assert_eq!(entropy(&row, 0.0), entropy(&row, 1.0), "greedy reports the logits' own entropy");
    }

    fn small() -> CausalLm {
        let cfg = LlamaConfig {
            hidden_size: 64,
            intermediate_size: 160,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            ..LlamaConfig::default()
        };
        CausalLm::tiny(cfg, &mut Rng::derive(0, "init"), &Device::Cpu).unwrap()
    }

    #[test]
    fn a_row_samples_alike_alone_or_batched_one_uniform_per_token() {
        let model = small();
        // Rows 0 and 2 share a prompt (and its prefill) but not a stream.
        let prompts: Vec<Vec<u32>> =
            ["12+34=", "7+8=", "12+34=", "9"].iter().map(|p| model.tokenizer().encode(p).unwrap()).collect();
        let opts = GenerateOptions { max_new_tokens: 12, temperature: 1.0, top_p: 0.9, stop_at_eos: false };
        let stream = |i: usize| Rng::derive(1, &format!("row{i}"));
        let mut streams: Vec<Rng> = (0..prompts.len()).map(stream).collect();
        let batched = generate_streams(&model, &prompts, &opts, &mut streams).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let alone = generate_streams(&model, std::slice::from_ref(p), &opts, &mut [stream(i)]).unwrap();
            assert_eq!(alone[0], batched[i], "row {i}");
            let mut fresh = stream(i);
            (0..opts.max_new_tokens).for_each(|_| _ = fresh.uniform());
            assert_eq!(fresh.uniform(), streams[i].uniform(), "row {i} drew one uniform per token");
        }
        let distinct: std::collections::HashSet<_> = batched.iter().collect();
        assert_eq!(distinct.len(), prompts.len(), "rows sample differently: {batched:?}");
        assert!(generate_streams(&model, &prompts, &opts, &mut streams[..3]).is_err());
    }

    #[test]
    fn generation_stops_at_any_stop_id() {
        let model = small();
        let prompt = b"12+34=".iter().map(|&b| u32::from(b)).collect::<Vec<_>>();
        let free_opts = GenerateOptions { max_new_tokens: 24, stop_at_eos: false, ..GenerateOptions::default() };
        let free = generate(&model, std::slice::from_ref(&prompt), &free_opts, &mut Rng::derive(0, "g")).unwrap();
        let free = &free[0];
        // The stop id: the last token of the longest prefix of distinct tokens (its first occurrence).
        let at = (0..free.len()).take_while(|&k| !free[..k].contains(&free[k])).last().unwrap();
        assert!(at > 0, "the seed should give a continuation of distinct tokens: {free:?}");
        // An EOS the model never emits here, so only the second stop id can end the row.
        let eos = (0..256).find(|t| !free.contains(t)).unwrap();

        // The same weights, with the stop id second in the tokenizer's list.
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let mut spec = ModelSpec::from_hf_dir(dir.path()).unwrap();
        let stops = TokenizerSpec { eos_id: eos, extra_stop_ids: vec![free[at]], ..TokenizerSpec::bytes() };
        spec.tokenizer = Tokenizer::new(Vocab::bytes(), stops);
        let stopping = CausalLm::from_spec(spec, &Device::Cpu).unwrap();
        let opts = GenerateOptions { stop_at_eos: true, ..free_opts };
        let got = generate(&stopping, &[prompt], &opts, &mut Rng::derive(0, "g")).unwrap();
        assert_eq!(got[0], free[..=at]);
    }
}
