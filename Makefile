# The everyday commands. `make test` sets up what the suites need (a project venv in .venv,
# redis-server and node when missing) and runs them; CI runs `make lint test`.
.PHONY: build model cuda-tools run test test-tools lint bench

# Every recipe sees the project's venv first on PATH, so `python3` (for pytest, the Rust
# tests that call Python, and the scripts) is the venv's.
export PATH := $(CURDIR)/.venv/bin:$(PATH)

build:
	cargo build --release

model:
	scripts/fetch-model.sh

# NVRTC and ptxas from PyPI, so the kernel-compile test runs without a GPU or a toolkit.
cuda-tools: .venv/ready
	scripts/fetch-cuda-tools.sh

# The Python packages the tests import, in .venv (ignored by git); again when the list
# changes.
.venv/ready: scripts/test-requirements.txt
	python3 -m venv .venv
	.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	.venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
	touch $@

# redis-server and node (apt-get) when missing.
test-tools:
	scripts/install-test-tools.sh

# Serves the bundled model on 127.0.0.1:8080 and prints a curl line with a demo key.
run: build model
	scripts/run-demo.sh

# The Rust suite, then the API suite against the real server with the `openai` package,
# then the deployment files (Helm chart, compose). Tests that run real models use the
# optimised release profile.
test: build model cuda-tools test-tools
	cargo test --release --workspace
	python3 -m pytest -q tests/api tests/deploy

lint:
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings

bench: build model
	./target/release/supernet bench --model models/SmolLM2-135M-Instruct.Q4_1.gguf
