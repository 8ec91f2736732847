#!/usr/bin/env bash
# Builds NAME.wasm for wasm32-wasip2. LAME (in the converter core) is C: it is compiled
# to WebAssembly with clang (Debian's clang-19, lld-19, wasi-libc and
# libclang-rt-19-dev-wasm32: Tapedeck's `make setup` installs them). Run from this
# folder: ./build.sh
# The converter core comes from a Tapedeck source checkout: TAPEDECK_SRC, linked as
# ./tapedeck-src (kept from the last build, or from `tapedeck plugin new`, when unset).
set -euo pipefail
cd "$(dirname "$0")"
if [ -n "${TAPEDECK_SRC:-}" ]; then
    ln -sfn "$TAPEDECK_SRC" tapedeck-src
fi
if [ ! -f tapedeck-src/components/converter/src/host_glue.rs ]; then
    echo "build: set TAPEDECK_SRC to a Tapedeck source checkout (the converter core is built from it)" >&2
    exit 1
fi
cc=clang-19; ar=llvm-ar-19
command -v "$cc" >/dev/null || { cc=clang; ar=llvm-ar; }
CC_wasm32_wasip2="$cc" AR_wasm32_wasip2="$ar" \
CFLAGS_wasm32_wasip2="--target=wasm32-wasi -D_WASI_EMULATED_SIGNAL -msimd128 -mnontrapping-fptoint -mbulk-memory -msign-ext" \
CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-C target-feature=+simd128" \
    cargo build --quiet --release --target wasm32-wasip2
cp target/wasm32-wasip2/release/SNAKE.wasm NAME.wasm
echo "built NAME.wasm ($(stat -c %s NAME.wasm) bytes)"
