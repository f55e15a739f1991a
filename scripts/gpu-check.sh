#!/usr/bin/env bash
# The GPU acceptance run (issue 33), for a lent CUDA machine that has no Rust and no
# network. Everything is built on the CPU machine and brought in `.gpu/` (an ignored
# folder): the model does not fit in one transfer, so it comes in two parts.
#
#   scripts/gpu-check.sh stage   # .gpu/a: model part 1, trimmed llama.cpp sources, tiny
#                                # models; starts llama.cpp's CUDA build in the background
#   scripts/gpu-check.sh run     # .gpu/b: model part 2, stripped binaries (xz), references;
#                                # kernel and model checks, our bench, llama-bench
#
# Results go to $OUT (tests.log, bench.json, bench.log, llama-bench.json, llama-batched.txt).
set -uo pipefail
W=/root/gpu
MODEL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
OUT=${OUT:-/tmp/out}
mkdir -p "$W" "$OUT"

stage() {
    cp .gpu/a/model.part1 "$W/"
    mkdir -p "$W/shared" && cp -r .gpu/a/shared/reference "$W/shared/"
    tar xJf .gpu/a/llama-src.tar.xz -C "$W"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
    # llama.cpp's CUDA build (FlashAttention kernels off to fit the lease), in its own
    # session so it outlives this command while the machine stays warm.
    setsid nohup bash -c "cd $W/llama.cpp && cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DGGML_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release > $W/llama-build.log 2>&1 \
        && cmake --build build -j 15 --target llama-bench llama-batched-bench >> $W/llama-build.log 2>&1; \
        echo \$? > $W/llama-build.rc" > /dev/null 2>&1 < /dev/null &
    echo "staged; llama.cpp build started"
}

run() {
    local t0=$SECONDS
    mkdir -p models target/release /work
    cat "$W/model.part1" .gpu/b/model.part2 > models/SmolLM2-135M-Instruct.Q4_1.gguf
    echo "$MODEL_SHA  models/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || exit 1
    xz -dc .gpu/b/supernet.xz > target/release/supernet && chmod +x target/release/supernet
    xz -dc .gpu/b/cuda-test.xz > "$W/cuda-test" && chmod +x "$W/cuda-test"
    cp .gpu/b/ref/smollm2-greedy.jsonl "$W/shared/reference/"
    # The test binary knows the repository by its build path.
    ln -sfn "$PWD" /work/main
    local libs
    libs=$(find /usr/local/cuda*/ /usr/lib /opt -name 'libnvrtc.so.13' -printf '%h\n' 2>/dev/null | head -1)
    libs="$libs:$(find /usr/local/nvidia /usr/lib /usr/local/cuda*/ -name 'libcuda.so.1' -printf '%h\n' 2>/dev/null | head -1)"
    export SUPERNET_CUDA_LIB_DIRS=$libs SUPERNET_SHARED=$W/shared RUST_BACKTRACE=1
    echo "libs: $libs"
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/device.txt"

    echo "== kernel and model checks"
    timeout 240 "$W/cuda-test" cuda:: --ignored --nocapture --test-threads 1 > "$OUT/tests.log" 2>&1
    echo "tests rc=$?"
    grep -E "^test |test result|panicked|rel err [0-9.e-]+$|greedy_matches|agree|equal the" "$OUT/tests.log" | grep -vE "round 1" | tail -60

    echo "== supernet bench (t=$((SECONDS - t0))s)"
    timeout 200 target/release/supernet bench --backend cuda --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --json --repetitions 5 > "$OUT/bench.json" 2> "$OUT/bench.log"
    echo "bench rc=$?"
    cat "$OUT/bench.log" | tr '\r' '\n' | tail -12

    echo "== llama.cpp (t=$((SECONDS - t0))s)"
    for _ in $(seq 1 ${LLAMA_WAIT:-150}); do [ -f "$W/llama-build.rc" ] && break; sleep 1; done
    cp "$W/llama-build.log" "$OUT/" 2>/dev/null
    if [ "$(cat "$W/llama-build.rc" 2>/dev/null)" = 0 ]; then
        local lb=$W/llama.cpp/build/bin
        timeout 60 "$lb/llama-bench" -m models/SmolLM2-135M-Instruct.Q4_1.gguf -ngl 99 -p 512 -n 128 -r 5 -o json > "$OUT/llama-bench.json" 2>/dev/null
        timeout 60 "$lb/llama-bench" -m models/SmolLM2-135M-Instruct.Q4_1.gguf -ngl 99 -p 512 -n 128 -r 5 2>&1 | tail -6
        timeout 120 "$lb/llama-batched-bench" -m models/SmolLM2-135M-Instruct.Q4_1.gguf -ngl 99 -c 24576 -b 2048 -ub 512 \
            -npp 48 -ntg 128 -npl 1,8,32,64,128 > "$OUT/llama-batched.txt" 2>&1
        grep -E "^\|" "$OUT/llama-batched.txt" | tail -8
    else
        echo "llama.cpp build not finished or failed:"; tail -5 "$W/llama-build.log"
    fi
    echo "== done in $((SECONDS - t0))s"
    cat "$OUT/bench.json"
}

"$@"
