//! LAME's WebAssembly SIMD kernels (components/converter/vendor/mp3lame-sys) against
//! LAME's own scalar C, on the same inputs.
//!
//! `check/simd_check.c` is compiled twice for wasm32-wasi with the clang that builds the
//! converter (`make setup` installs clang-19), once with `-msimd128` (the kernels) and
//! once without (LAME's C), and run under Node's WASI (Node is on the machine: `make
//! setup` installs maildev with npm). The outputs must agree: `fht` exactly,
//! `window_subband` to float rounding; the SIMD build checks `init_xrpow_core` and
//! `ix_max` itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const RUN_WASI: &str = "const { WASI } = require('node:wasi');\
    const wasi = new WASI({ version: 'preview1', args: [], env: {} });\
    WebAssembly.instantiate(require('fs').readFileSync(process.argv[1]), wasi.getImportObject())\
    .then(({ instance }) => { process.exitCode = wasi.start(instance); });";

fn lame_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../components/converter/vendor/mp3lame-sys")
}

fn clang() -> &'static str {
    if Command::new("clang-19").arg("--version").output().is_ok() {
        "clang-19"
    } else {
        "clang"
    }
}

/// Builds simd_check.c (with or without SIMD), runs it, and returns its printed values.
fn run_check(dir: &Path, simd: bool) -> HashMap<String, f64> {
    let vendor = lame_dir();
    let lame = vendor.join("lame-3.100");
    let wasm = dir.join(if simd { "simd.wasm" } else { "scalar.wasm" });
    let mut cc = Command::new(clang());
    cc.args([
        "--target=wasm32-wasi",
        "-D_WASI_EMULATED_SIGNAL",
        "-O2",
        "-ffast-math",
        "-w",
    ])
    .arg(format!("-I{}", vendor.join("config").display()))
    .arg(format!("-I{}", lame.join("include").display()))
    .arg(format!("-I{}", lame.join("libmp3lame").display()))
    .arg(vendor.join("check/simd_check.c"))
    .arg("-o")
    .arg(&wasm)
    .arg("-lm");
    if simd {
        cc.arg("-msimd128");
    }
    let out = cc
        .output()
        .expect("clang runs (make setup installs clang-19 and wasi-libc)");
    assert!(
        out.status.success(),
        "simd_check.c did not build: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new("node")
        .args(["--no-warnings", "-e", RUN_WASI])
        .arg(&wasm)
        .output()
        .expect("node runs (it is on the machine; make setup uses its npm)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the {} check failed: {}{}",
        if simd { "SIMD" } else { "scalar" },
        stdout.lines().last().unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|line| {
            let (key, value) = line
                .rsplit_once(' ')
                .expect("`<kernel> <round> <index> <value>`");
            (key.to_owned(), value.parse().expect("a float"))
        })
        .collect()
}

#[test]
fn wasm_simd_kernels_compute_what_lames_c_computes() {
    let dir = tempfile::tempdir().unwrap();
    let scalar = run_check(dir.path(), false);
    let simd = run_check(dir.path(), true);
    assert_eq!(scalar.len(), 64 * (32 + 1024), "every value printed");
    assert_eq!(scalar.len(), simd.len());

    let mut worst_window = 0f64;
    for (key, &want) in &scalar {
        let got = simd[key];
        if key.starts_with("fht") {
            assert_eq!(got, want, "{key}: the SIMD FFT must be bit-identical");
        } else {
            worst_window = worst_window.max((got - want).abs() / (1.0 + want.abs()));
        }
    }
    // Inputs are ~±1000; reordered float sums differ in the last bits only.
    assert!(
        worst_window < 1e-4,
        "window_subband differs by {worst_window:e} (relative)"
    );
    // The comparison is not vacuous: the outputs are not all zero.
    assert!(scalar.values().filter(|v| v.abs() > 1.0).count() > 1000);
}
