#!/usr/bin/env bash
# Builds NAME.wasm for wasm32-wasip2 (needs `rustup target add wasm32-wasip2`). Run from
# this folder: ./build.sh
set -euo pipefail
cd "$(dirname "$0")"
cargo build --quiet --release --target wasm32-wasip2
cp target/wasm32-wasip2/release/SNAKE.wasm NAME.wasm
echo "built NAME.wasm ($(stat -c %s NAME.wasm) bytes)"
