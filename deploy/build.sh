#!/usr/bin/env bash
# Builds the release binary and puts it, stripped, into DEST (default: target/image).
# deploy/Dockerfile runs this script in its build stage, and .ci/run runs it too, so CI
# checks the image's build steps on machines that have no Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-target/image}
# The workspace's features (as `make build` resolves them), so a tree `make test` built is
# reused, not compiled again.
cargo build --release --locked --workspace --bin supernet
mkdir -p "$dest"
strip -o "$dest/supernet" target/release/supernet
# Every role starts from this one binary: check that each answers.
for role in serve front coordinator worker admin; do
  "$dest/supernet" "$role" --help >/dev/null
done
echo "built $dest/supernet ($(du -h "$dest/supernet" | cut -f1)), $("$dest/supernet" --version)"
