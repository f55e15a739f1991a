# The everyday commands. `make test` is what CI runs.
.PHONY: build model cuda-tools run test lint bench

build:
	cargo build --release

model:
	scripts/fetch-model.sh

# NVRTC and ptxas from PyPI, so the kernel-compile test runs without a GPU or a toolkit.
cuda-tools:
	scripts/fetch-cuda-tools.sh

# Serves the bundled model on 127.0.0.1:8080 and prints a curl line with a demo key.
run: build model
	scripts/run-demo.sh

# The Rust suite, then the API suite against the real server with the `openai` package,
# then the deployment files (Helm chart, compose). Tests that run real models use the
# optimised release profile.
test: build model cuda-tools
	cargo test --release --workspace
	python3 -m pytest -q tests/api tests/deploy

lint:
	cargo clippy --release --workspace --all-targets -- -D warnings

bench: build model
	./target/release/supernet bench --model models/SmolLM2-135M-Instruct.Q4_1.gguf
