#!/usr/bin/env bash
# `make fuzz`: runs each cargo-fuzz target of the converter for FUZZ_SECONDS (default
# 600), seeded with ../shared/media and the generated inputs (src/testgen.rs).
#
# Needs the nightly toolchain and cargo-fuzz (installed from crates.io when missing).
# Findings land in fuzz/artifacts/TARGET/; once fixed, copy the input to
# fuzz/regressions/TARGET/, which `make test` replays on stable
# (fuzzing::tests::fuzz_regressions_replay_cleanly). Each target's corpus grows in
# fuzz/corpus/TARGET/ across runs.
#
# Limits, as the issue sets them: an input of up to 1 MiB, a hang is > 10 s, an
# out-of-memory > 2 GiB. FUZZ_TARGETS picks targets.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-600}"
targets="${FUZZ_TARGETS:-mp4_reader convert id3_writer}"
cargo="${CARGO:-cargo}"
media="../../../../shared/media"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: installing the nightly toolchain" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! "$cargo" +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    "$cargo" install cargo-fuzz --locked
fi

# Seeds: the shared corpus and the generated inputs.
mkdir -p seeds
if [ -d "$media" ]; then
    find "$media" -maxdepth 1 -type f ! -name '*.tsv' ! -name '*.md' -size -1024k \
        -exec cp -f {} seeds/ \;
fi
"$cargo" run --quiet --release --manifest-path ../Cargo.toml --features testgen \
    --example gen_inputs -- seeds >/dev/null

for target in $targets; do
    mkdir -p "corpus/$target" "artifacts/$target"
    echo "fuzz: $target for ${seconds}s" >&2
    "$cargo" +nightly fuzz run "$target" "corpus/$target" seeds -- \
        -max_total_time="$seconds" -timeout=10 -max_len=1048576 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1
done
