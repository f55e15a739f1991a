# The everyday commands. `make test` is what CI runs.
.PHONY: build model test lint bench

build:
	cargo build --release

model:
	scripts/fetch-model.sh

# Tests that run real models use the optimised release profile.
test: model
	cargo test --release

lint:
	cargo clippy --release --all-targets -- -D warnings

bench: build model
	./target/release/supernet bench --model models/SmolLM2-135M-Instruct.Q4_1.gguf
