#!/usr/bin/env bash
# Seeds the fuzz corpus with every .recipe file of the repository (golden cases, examples, the
# stdlib). Run from anywhere; the corpus lands in fuzz/corpus/front_end (ignored by git).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
corpus="$root/fuzz/corpus/front_end"
mkdir -p "$corpus"
find "$root/tests/golden" "$root/recipes" "$root/stdlib" -name '*.recipe' 2>/dev/null | while read -r f; do
    cp "$f" "$corpus/$(echo "${f#"$root"/}" | tr '/' '_')"
done
echo "seeded $(ls "$corpus" | wc -l) inputs into $corpus"
