#!/usr/bin/env bash
# Installs what the build needs on a Debian machine that has only Rust, gcc/g++ and Python:
# clang++ (a second compiler for the tests and the layout oracle) and libclang (layout-gen).
# Safe to run again: it installs nothing that is already there.
set -euo pipefail

LLVM_VERSION=19
PACKAGES=(clang-$LLVM_VERSION libclang-$LLVM_VERSION-dev)

missing=()
command -v clang++-$LLVM_VERSION >/dev/null 2>&1 || missing+=(clang-$LLVM_VERSION)
[ -e /usr/lib/llvm-$LLVM_VERSION/lib/libclang.so ] || missing+=(libclang-$LLVM_VERSION-dev)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${missing[*]}; install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${PACKAGES[*]}" >&2
    exit 1
fi

echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
echo "setup: done" >&2
