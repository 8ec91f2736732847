#!/usr/bin/env bash
# The plugin kit from the outside, as docs/plugins.md walks it: for each language, a new
# notifier project (`tapedeck plugin new`), built with its own build.sh, passes
# `tapedeck plugin check` and composes byte for byte the built-in notifier's messages
# (examples/plugins/harness, 31 cases); a new Rust converter project passes `plugin
# check`, and builds again from a copy of the project elsewhere. Prints the time each
# step took.
#   scripts/plugin-kit-test.sh [path/to/tapedeck]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(realpath "${1:-$root/target/release/tapedeck}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for lang in rust python js; do
    start=$(date +%s%3N)
    "$bin" plugin new notifier "kit-$lang" --lang "$lang" --dir "$work/kit-$lang" >/dev/null
    (cd "$work/kit-$lang" && ./build.sh)
    built=$(date +%s%3N)
    "$bin" plugin check "$work/kit-$lang/kit-$lang.wasm" --stage notifier
    "$root/examples/plugins/harness/check.sh" "$work/kit-$lang/kit-$lang.wasm" \
        "$root/target/components/wasm32-wasip2/release/tapedeck_notifier.wasm"
    done_ms=$(date +%s%3N)
    echo "plugin kit: $lang: new + build $(( (built - start) / 1000 )) s, check $(( (done_ms - built) / 1000 )) s"
done
start=$(date +%s%3N)
"$bin" plugin new converter kit-converter --lang rust --dir "$work/kit-converter" >/dev/null
(cd "$work/kit-converter" && ./build.sh)
built=$(date +%s%3N)
"$bin" plugin check "$work/kit-converter/kit-converter.wasm" --stage converter
done_ms=$(date +%s%3N)
echo "plugin kit: converter (rust): new + build $(( (built - start) / 1000 )) s, check $(( (done_ms - built) / 1000 )) s"
# No path of this checkout is in the project: a copy elsewhere builds from TAPEDECK_SRC.
cp -r "$work/kit-converter" "$work/moved-converter"
rm -rf "$work/moved-converter/target" "$work/moved-converter/.tapedeck-src"
if grep -rq "$root" "$work/moved-converter"; then
    echo "plugin kit: the converter project names $root" >&2
    exit 1
fi
(cd "$work/moved-converter" && TAPEDECK_SRC="$root" ./build.sh)
echo "plugin kit: converter (rust): a copy elsewhere builds from TAPEDECK_SRC"
