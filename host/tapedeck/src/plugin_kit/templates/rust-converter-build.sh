#!/usr/bin/env bash
# Builds NAME.wasm for wasm32-wasip2. LAME (in the converter core) is C: it is compiled
# to WebAssembly with clang (Debian's clang-19, lld-19, wasi-libc and
# libclang-rt-19-dev-wasm32: Tapedeck's `make setup` installs them). Run from this
# folder: ./build.sh
# The converter core comes from a Tapedeck source checkout: TAPEDECK_SRC, remembered in
# .tapedeck-src (written by `tapedeck plugin new` and by each build given TAPEDECK_SRC).
set -euo pipefail
cd "$(dirname "$0")"
src="${TAPEDECK_SRC:-$(cat .tapedeck-src 2>/dev/null || true)}"
if [ -z "$src" ] || [ ! -f "$src/components/converter/src/host_glue.rs" ]; then
    echo "build: set TAPEDECK_SRC to a Tapedeck source checkout (the converter core is built from it)" >&2
    exit 1
fi
src="$(cd "$src" && pwd)"
printf '%s\n' "$src" >.tapedeck-src
core="$src/components/converter"
export TAPEDECK_SRC="$src"
# The checkout's path is not built into the component (panic locations, C asserts):
# -ffile-prefix-map and --remap-path-prefix below.
cc=clang-19; ar=llvm-ar-19
command -v "$cc" >/dev/null || { cc=clang; ar=llvm-ar; }
CC_wasm32_wasip2="$cc" AR_wasm32_wasip2="$ar" \
CFLAGS_wasm32_wasip2="--target=wasm32-wasi -D_WASI_EMULATED_SIGNAL -msimd128 -mnontrapping-fptoint -mbulk-memory -msign-ext -ffile-prefix-map=$src=tapedeck-src" \
CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-C target-feature=+simd128 --remap-path-prefix=$src=tapedeck-src" \
    cargo build --quiet --release --target wasm32-wasip2 \
        --config "patch.crates-io.tapedeck-converter.path=\"$core\"" \
        --config "patch.crates-io.symphonia-codec-aac.path=\"$core/vendor/symphonia-codec-aac\"" \
        --config "patch.crates-io.mp3lame-sys.path=\"$core/vendor/mp3lame-sys\""
cp target/wasm32-wasip2/release/SNAKE.wasm NAME.wasm
echo "built NAME.wasm ($(stat -c %s NAME.wasm) bytes)"
