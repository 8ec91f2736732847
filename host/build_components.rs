// Shared by the build scripts of `host` and `tests` (via `include!`): builds guest
// components for wasm32-wasip2 with a nested cargo into `<target>/components`, so the
// outer build's lock is never contended, and returns the directory of the `.wasm` files.
//
// LAME is C: it is built with Debian's clang for wasm32-wasi (see
// ../shared/notes/wasm-build-facts.md). These settings are for wasm only, which is why
// they are set here, on the nested cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .expect("the workspace root holds Cargo.lock")
        .to_path_buf()
}

fn build_components(packages: &[&str], watch: &[&str]) -> PathBuf {
    let root = workspace_root();
    for dir in watch {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
        .join("components");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for native code.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "OPT_LEVEL",
        "PROFILE",
        "DEBUG",
        "NUM_JOBS",
    ] {
        cmd.env_remove(var);
    }
    // LAME (components/converter/vendor/mp3lame-sys, built with `cc`) gets its own
    // defines and -ffast-math from its build script; here only what makes C code wasm:
    // WASI's libc, the wasm features Rust enables by default (nontrapping float-to-int,
    // bulk memory, sign extension) and SIMD. Components are small: fat LTO in one codegen
    // unit costs seconds.
    // clang 19 (Debian 12's clang-19 packages) makes 5% fewer wasm instructions of LAME
    // than the default clang 14 (bench/RESULTS.md); any clang with WASI support works.
    let (cc, ar) = if Command::new("clang-19").arg("--version").output().is_ok() {
        ("clang-19", "llvm-ar-19")
    } else {
        println!("cargo:warning=clang-19 not found (make setup installs it); building LAME with clang");
        ("clang", "llvm-ar")
    };
    cmd.env("CC_wasm32_wasip2", cc)
        .env("AR_wasm32_wasip2", ar)
        .env(
            "CFLAGS_wasm32_wasip2",
            "--target=wasm32-wasi -D_WASI_EMULATED_SIGNAL -msimd128 -mnontrapping-fptoint \
             -mbulk-memory -msign-ext",
        )
        .env("CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS", "-C target-feature=+simd128")
        .env("CARGO_PROFILE_RELEASE_LTO", "fat")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
    let status = cmd.status().expect("cargo could not be started to build the wasm components");
    assert!(
        status.success(),
        "building wasm components {packages:?} failed; run `make setup` (needs the wasm32-wasip2 \
         rustup target and Debian's clang-19, lld-19, wasi-libc, libclang-rt-19-dev-wasm32)"
    );
    target_dir.join("wasm32-wasip2").join("release")
}

#[allow(dead_code)]
fn component_path(dir: &Path, package: &str) -> PathBuf {
    let path = dir.join(format!("{}.wasm", package.replace('-', "_")));
    assert!(path.exists(), "{} was not produced", path.display());
    path
}
