# The front door. `make run` and `make test` install what is missing (scripts/setup.sh).
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: setup setup-bench build run test test-long chaos lint bench fuzz clean

setup:
	@scripts/setup.sh

setup-bench: setup
	@scripts/setup.sh bench

## Release host binary with the default components built in.
build: setup
	$(CARGO) build --release --locked -p tapedeck

## Build everything and serve Tapedeck on http://127.0.0.1:8080 (Ctrl-C stops it).
run: build
	./target/release/tapedeck serve

# Clippy as the compiler of the workspace's own crates (what `cargo clippy` does, but in
# the ci-profile build the tests need): the lints without a second, check-only compile
# of every dependency (6 of CI's 22 minutes).
CLIPPY_AS_RUSTC = RUSTC_WORKSPACE_WRAPPER="$$(rustup which clippy-driver)" \
	CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__

# The Rust suite's runner: cargo-nextest (every test in a process of its own, several at
# once: .config/nextest.toml), or, where it is not installed, cargo test (the same tests,
# one binary after another; minutes slower). Never fewer tests.
NEXTEST := $(shell command -v cargo-nextest 2>/dev/null)

# The built-in notifier as the suite's build made it: the example Python and JavaScript
# notifiers must compose byte for byte its messages (examples/plugins/harness).
BUILT_IN_NOTIFIER = target/components/wasm32-wasip2/release/tapedeck_notifier.wasm
RUST_SUITE = $(if $(NEXTEST),nextest run --cargo-profile ci,test --profile ci)

## Formatting, clippy -D warnings, then every test (real redis-server, ffmpeg,
## ../shared/media; a missing one fails the tests that need it): the deploy manifests
## validated offline, the example Python and JavaScript plugins built (the Rust suite
## publishes them), the Rust suite (cargo-nextest if installed) and its doctests, the
## example notifiers' messages against the built-in one's (Node, 31 cases each), then
## the short versions of the browser test (Chromium + axe) and the schemathesis run,
## against the suite's build of the CLI (tapedeck-test-serve: the same `tapedeck`
## command line).
test: setup
	$(CARGO) fmt --all --check
	scripts/luacheck.sh
	scripts/setup-deploy.sh && deploy/validate.sh
	scripts/setup-plugins.sh && examples/plugins/build.sh target/plugins
	@$(if $(NEXTEST),,echo "make test: cargo-nextest is not installed; running the Rust suite with cargo test (every test, one binary at a time: slower)" >&2)
	TAPEDECK_PLUGIN_EXAMPLES=$(CURDIR)/target/plugins \
		$(CLIPPY_AS_RUSTC) $(CARGO) $(RUST_SUITE) --locked --workspace --all-targets
	$(CLIPPY_AS_RUSTC) $(CARGO) test --profile ci --locked --workspace --doc
	examples/plugins/harness/check.sh target/plugins/notifier-python.wasm $(BUILT_IN_NOTIFIER)
	examples/plugins/harness/check.sh target/plugins/notifier-js.wasm $(BUILT_IN_NOTIFIER)
	scripts/setup-browser.sh && TAPEDECK_BIN=target/ci/tapedeck-test-serve tests/browser/run.sh
	scripts/setup-api-test.sh && TAPEDECK_BIN=target/ci/tapedeck-test-serve SCHEMATHESIS_EXAMPLES=$${SCHEMATHESIS_EXAMPLES:-10} tests/api/run.sh

## The long versions: schemathesis with 200 examples per operation, the plugin kit's
## templates built and checked in each language, and every command of docs/plugins.md
## run in order (cargo, pip and npm fetch the plugin toolchains from their registries).
test-long: test
	TAPEDECK_BIN=target/ci/tapedeck-test-serve SCHEMATHESIS_EXAMPLES=200 SCHEMATHESIS_SEED=random tests/api/run.sh
	scripts/plugin-kit-test.sh target/ci/tapedeck-test-serve
	scripts/docs-test.sh target/ci/tapedeck-test-serve

## The chaos suite (tests/src/chaos.rs, minutes; not part of `make test`, which runs its
## short version): 400 jobs over 3 tenants through 2 gateways and 3 workers while workers
## are SIGKILLed, Redis SIGKILLed and restarted on its AOF, gateways SIGTERMed, a converter
## activated and rolled back and pub/sub connections dropped; then every job, MP3 and
## notification checked. Once on one Redis, once on a 3-node Redis Cluster. The table of
## each pass goes to stdout; a failed check fails the target (logs kept, path on stderr).
chaos: setup
	TAPEDECK_PLUGIN_EXAMPLES=$(CURDIR)/target/plugins \
		$(CLIPPY_AS_RUSTC) $(CARGO) build --profile ci --locked -p tapedeck-tests --bins
	target/ci/chaos
	target/ci/chaos --cluster

## Formatting and lints alone: `make test`'s own build without running it (ci profile,
## clippy as the compiler), so after `make test` nothing is compiled again, and lint
## leaves the build `make test` reuses (`cargo clippy` would check every dependency
## again: 145 crates for two of ours).
lint: setup
	$(CARGO) fmt --all --check
	scripts/luacheck.sh
	$(CLIPPY_AS_RUSTC) $(CARGO) test --profile ci --locked --workspace --all-targets --no-run

## Benchmarks (converter, notifier, service); figures go to bench/RESULTS.md by hand
## after review.
bench: build setup-bench
	$(CARGO) run --release --locked -p tapedeck-bench -- $(BENCH_ARGS)
	NOTIFY_BENCH_N=$${NOTIFY_BENCH_N:-500} $(CARGO) test --release --locked -p tapedeck-tests --test host \
		notify::bench_notifications_per_second -- --ignored --nocapture
	bench/service.sh
	bench/limits.sh
	bench/swap.sh

## Fuzz the converter's native core (cargo-fuzz, nightly): each target for FUZZ_SECONDS
## (default 600), seeded with ../shared/media and generated inputs; findings go to
## components/converter/fuzz/artifacts/ (see components/converter/fuzz/run.sh).
FUZZ_SECONDS ?= 600
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) components/converter/fuzz/run.sh

clean:
	$(CARGO) clean
