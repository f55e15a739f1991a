#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh takes to a lent GPU machine (no Rust, no network there)
# into .gpu/ (git-ignored through .git/info/exclude), in two parts under the 64 MiB a
# transfer may carry: .gpu/a (model part 1, llama.cpp's trimmed sources from the same PyPI
# sdist the CPU anchors use, tiny models) and .gpu/b (model part 2, stripped and xz'd
# binaries, the greedy references).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
cargo build --release
cargo test --release --test suite --no-run 2>&1 | tee /tmp/gpu-payload-test.log
test_bin=$(grep -o 'target/release/deps/suite-[0-9a-f]*' /tmp/gpu-payload-test.log | tail -1)
rm -rf .gpu && mkdir -p .gpu/a/shared/reference/tiny-models .gpu/b/ref
strip -o .gpu/b/supernet target/release/supernet && xz -T2 .gpu/b/supernet
strip -o .gpu/b/cuda-test "$test_bin" && xz -T2 .gpu/b/cuda-test
M=models/SmolLM2-135M-Instruct.Q4_1.gguf
head -c 48234496 "$M" > .gpu/a/model.part1
tail -c +48234497 "$M" > .gpu/b/model.part2
ref=${SUPERNET_SHARED:-../shared}/reference
cp "$ref/smollm2-greedy.jsonl" .gpu/b/ref/
for n in llama-q4_0 llama-q4_1 llama-q8_0 llama-q4_k_m llama-q6_k llama-iq4_xs qwen2-q4_k_m qwen2-q8_0 qwen3-q4_k_m qwen3-q8_0; do
    cp "$ref/tiny-models/tiny-$n.gguf" .gpu/a/shared/reference/tiny-models/
done
# llama.cpp: the copy vendored in llama-cpp-python 0.3.36 (commit 0c1e57098), only what
# llama-bench and llama-batched-bench build from.
tmp=$(mktemp -d)
python3 -m pip install --quiet scikit-build-core
python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation llama-cpp-python==0.3.36 -d "$tmp"
tar xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp"
src="$tmp/llama_cpp_python-0.3.36/vendor/llama.cpp" dst="$tmp/trim/llama.cpp"
mkdir -p "$dst/tools"
cp -r "$src"/{CMakeLists.txt,cmake,common,ggml,include,src,vendor,LICENSE} "$dst/"
cp -r "$src"/tools/{llama-bench,batched-bench} "$dst/tools/"
printf 'find_package(Threads REQUIRED)\nllama_add_compile_flags()\nadd_subdirectory(batched-bench)\nadd_subdirectory(llama-bench)\n' > "$dst/tools/CMakeLists.txt"
(cd "$dst/ggml/src" && rm -rf ggml-cann ggml-et ggml-hexagon ggml-hip ggml-metal ggml-musa ggml-opencl ggml-openvino \
    ggml-rpc ggml-sycl ggml-virtgpu ggml-vulkan ggml-webgpu ggml-zdnn ggml-zendnn ggml-blas)
tar cJf .gpu/a/llama-src.tar.xz -C "$tmp/trim" llama.cpp
rm -rf "$tmp"
du -sb .gpu/a .gpu/b
