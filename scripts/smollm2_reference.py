"""Reference figures for the GGUF import, from transformers' own GGUF loader.

Loads SmolLM2-135M-Instruct with `from_pretrained(folder, gguf_file=name)` in float32 (tokenizer
and model), and writes the figures `runtime/tests/gguf.rs` holds the runtime to:

- `encodings`: token ids of texts (accents, emoji, CJK, special tokens written in the text,
  leading spaces, digits), encoded without special tokens added (no BOS: SmolLM2's
  `add_bos_token` is false);
- `logprobs`: per prompt/completion pair, the ids (prompt, then completion + EOS, tokenised
  separately as TRL does) and the summed log-probability of the completion tokens
  (`model::completion_logprobs`' definition; float32 model, log-softmax in float64);
- `greedy`: per prompt, the ids of a greedy continuation of up to 16 tokens (stopping at EOS,
  which is kept);
- `chats`: per conversation, `apply_chat_template`'s ids, with and without the generation
  prompt (the model's own template, with the default system turn it adds).

Run with the peer venv (torch, transformers, gguf):
    /work/peer-venv/bin/python scripts/smollm2_reference.py \
        models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf tests/fixtures/smollm2_reference.json
"""

import json
import os
import re
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "café naïve résumé",
    "🙂👍",
    "東京は日本の首都です。",
    "<|im_start|>user\nhi<|im_end|>",
    "   leading spaces\tand a tab",
    "1,234.5 and 42",
]

PAIRS = [
    ("The capital of France is", " Paris."),
    ("Question: what is 2 + 3?\nAnswer:", " 5"),
    ("<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n", "Hello! How can I help you today?"),
    ("Once upon a time", ", there was a little café."),
]

PROMPTS = [
    "The quick brown fox",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "1, 2, 3, 4,",
]

NEW_TOKENS = 16


# Conversations for the chat template: system/user/assistant turns, accents and an emoji.
CHATS = [
    [{"role": "user", "content": "What is 48 + 24?"}],
    [{"role": "system", "content": "Solve it step by step."},
     {"role": "user", "content": "Natalia sold 48 clips in April… how many in May? 🙂"},
     {"role": "assistant", "content": "She sold 48/2 = 24 clips.\n#### 24"}],
]


def main(gguf_path: str, out_path: str) -> None:
    torch.manual_seed(0)
    folder, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    encode = lambda text: tok(text, add_special_tokens=False).input_ids
    eos = tok.eos_token_id

    encodings = [{"text": t, "ids": encode(t)} for t in TEXTS]

    logprobs = []
    for prompt, completion in PAIRS:
        p, c = encode(prompt), encode(completion) + [eos]
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logits = model(ids).logits
        # The log-softmax of the float32 logits in float64: a float32 one over 49 152 logits is
        # itself ~1e-4 off on these sums, which would blur what the fixture compares.
        lp = torch.log_softmax(logits[0, :-1].double(), dim=-1)
        targets = ids[0, 1:]
        token_lp = lp.gather(1, targets[:, None])[:, 0]
        total = token_lp[len(p) - 1 :].sum().item()
        logprobs.append({"prompt": prompt, "completion": completion, "prompt_ids": p,
                         "completion_ids": c, "logprob_sum": total})

    greedy = []
    for prompt in PROMPTS:
        ids = torch.tensor([encode(prompt)])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id)
        greedy.append({"prompt": prompt, "ids": out[0, ids.shape[1]:].tolist()})

    chats = [{"messages": m,
               "ids": tok.apply_chat_template(m, tokenize=True, return_dict=False),
               "generation_ids": tok.apply_chat_template(m, tokenize=True, add_generation_prompt=True, return_dict=False)}
             for m in CHATS]

    doc = {
        "source": "transformers " + transformers.__version__ + ", from_pretrained(folder, gguf_file=name), float32",
        "model": name,
        "special": {"bos": tok.bos_token_id, "eos": eos, "pad": tok.pad_token_id},
        "encodings": encodings,
        "logprobs": logprobs,
        "greedy": greedy,
        "chats": chats,
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    # One line per id list, so the fixture stays short and its diffs readable.
    text = re.sub(r"\[[\d,\s]*\]", lambda m: "[" + ", ".join(m.group(0)[1:-1].split()).replace(",,", ",") + "]", text)
    with open(out_path, "w") as f:
        f.write(text + "\n")
    print(out_path)


if __name__ == "__main__":
    main(*sys.argv[1:3])
