#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs clang/libclang when missing, then runs
# every test of the workspace (real compilers, real shared libraries), after fetching the real
# open-source libraries the tests reload (Debian source packages, into third-party/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch-third-party.sh
cargo test --workspace --locked --no-fail-fast "$@"
