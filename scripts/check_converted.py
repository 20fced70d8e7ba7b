"""Checks a folder written by `recipe convert FILE.gguf --out DIR` against transformers' own GGUF
loader: transformers opens the folder unchanged (AutoModelForCausalLM, AutoTokenizer), every
weight equals the one transformers dequantises from the GGUF file, the tokenizers give the same
ids, and the logits of a few texts agree. Prints the largest differences; exits 1 on a mismatch.

    /work/peer-venv/bin/python scripts/check_converted.py DIR models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""

import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXTS = [
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
    "café naïve 🙂 東京 1,234.5",
]


def main(folder: str, gguf_path: str) -> int:
    gguf_dir, gguf_name = os.path.split(os.path.abspath(gguf_path))
    ours = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    theirs = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32).eval()
    tok_ours = AutoTokenizer.from_pretrained(folder)
    tok_theirs = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    ok = True

    a, b = ours.state_dict(), theirs.state_dict()
    if a.keys() != b.keys():
        print("parameter names differ:", sorted(a.keys() ^ b.keys()))
        return 1
    worst = max((float((a[k] - b[k]).abs().max()), k) for k in a)
    print(f"largest weight difference: {worst[0]:.3g} ({worst[1]})")
    ok &= worst[0] == 0.0

    for text in TEXTS:
        ids = tok_ours(text, add_special_tokens=False).input_ids
        ok &= ids == tok_theirs(text, add_special_tokens=False).input_ids
        with torch.no_grad():
            x = torch.tensor([ids])
            diff = float((ours(x).logits - theirs(x).logits).abs().max())
        print(f"{text!r}: {len(ids)} ids, same ids: {ids == tok_theirs(text, add_special_tokens=False).input_ids}, "
              f"largest logit difference {diff:.3g}")
        ok &= diff < 1e-4
    print("template:", tok_ours.chat_template == tok_theirs.chat_template,
          "special:", (tok_ours.bos_token, tok_ours.eos_token, tok_ours.pad_token))
    ok &= tok_ours.chat_template == tok_theirs.chat_template
    ok &= (tok_ours.eos_token_id, tok_ours.pad_token_id) == (tok_theirs.eos_token_id, tok_theirs.pad_token_id)
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
