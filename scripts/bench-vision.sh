#!/usr/bin/env bash
# Encode time per image, ours against llama.cpp's libmtmd in the same run: both tiny
# towers, the four reference images. Needs `mtmd_ref` built as tests/data/vision/README.md
# says: MTMD_REF=path/to/mtmd_ref LLAMA_LIB=path/to/build/bin bash scripts/bench-vision.sh
set -e
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SUPERNET_SHARED:-$REPO/../shared}
MTMD_REF=${MTMD_REF:-/tmp/mtmd_ref}
cd "$REPO/tests/data/vision"
export LD_LIBRARY_PATH=${LLAMA_LIB:-/tmp/lsbuild/bin}
head -4 cases.tsv > /tmp/bv-cases.tsv
for m in qwen3vl idefics3; do
  if [ $m = qwen3vl ]; then LM=$SHARED/reference/tiny-models/tiny-qwen35moe-q8_0.gguf; else LM=tiny-smolvlm-q8_0.gguf; fi
  for r in 1 2 3 4 5; do mkdir -p /tmp/bv/$m/$r; "$MTMD_REF" $LM tiny-mmproj-$m.gguf 1 /tmp/bv/$m/$r < /tmp/bv-cases.tsv 2>/dev/null; done
  "$REPO/target/release/supernet" bench vision --mmproj tiny-mmproj-$m.gguf --threads 2 --runs 10 --json --image images/square.png --image images/wide.png --image images/tall.png --image images/large.png | tail -1 > /tmp/bv/$m/ours.json
done
python3 - <<'PY'
import json, statistics
for m in ['qwen3vl','idefics3']:
    ours={i['image'].split('/')[-1][:-4]: i for i in json.load(open(f'/tmp/bv/{m}/ours.json'))['images']}
    for name in ['square','wide','tall','large']:
        ms=[sum(c['encode_ms'] for c in json.load(open(f'/tmp/bv/{m}/{r}/{name}.json'))['chunks'] if c['type']=='image') for r in range(1,6)]
        l=statistics.median(ms); o=ours[name]['encode_ms_p50']
        print(f"{m:9} {name:6} {ours[name]['width']}x{ours[name]['height']:<5} rows {ours[name]['rows']:4}  ours {o:8.2f} ms  llama.cpp {l:8.2f} ms  ratio {o/l:5.2f}")
PY
