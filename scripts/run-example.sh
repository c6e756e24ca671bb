#!/usr/bin/env bash
# The main job, from a fresh clone: installs clang/libclang when missing, then runs the example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --locked -p example-project -- "$@"
