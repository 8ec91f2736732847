//! The `tapedeck` binary end to end: exit codes, messages, and no partial output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

const TAPEDECK: &str = env!("CARGO_BIN_EXE_tapedeck-test-serve");
const HOSTILE_WASM: &str = env!("TAPEDECK_HOSTILE_WASM");

/// Runs `tapedeck convert` with the hostile guest on `input`; returns the output path too.
fn convert(dir: &Path, input: &[u8], extra: &[&str]) -> (Output, PathBuf) {
    let input_path = dir.join("input.mp4");
    let output_path = dir.join("out.mp3");
    fs::write(&input_path, input).unwrap();
    let output = Command::new(TAPEDECK)
        .arg("convert")
        .arg(&input_path)
        .arg("-o")
        .arg(&output_path)
        .args(["--plugin", HOSTILE_WASM, "--cache-dir"])
        .arg(dir.join("cache"))
        .args(extra)
        .output()
        .unwrap();
    (output, output_path)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_fails_with(input: &[u8], extra: &[&str], message: &str) {
    let dir = TempDir::new().unwrap();
    let (output, output_path) = convert(dir.path(), input, extra);
    assert!(!output.status.success(), "succeeded on {input:?}");
    assert!(
        stderr(&output).contains(message),
        "stderr: {}",
        stderr(&output)
    );
    assert!(
        !output_path.exists(),
        "a failed run left {}",
        output_path.display()
    );
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn echo_input_converts() {
    let dir = TempDir::new().unwrap();
    let (output, output_path) = convert(dir.path(), b"echo this", &[]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(fs::read(output_path).unwrap(), b"echo this");
}

#[test]
fn memory_hog_fails_with_the_memory_limit() {
    assert_fails_with(
        b"alloc",
        &["--max-memory", "16"],
        "tapedeck: memory limit of 16 MiB exceeded",
    );
}

#[test]
fn endless_loop_fails_with_the_cpu_limit_in_both_modes() {
    let message = "tapedeck: CPU time limit of 1 s exceeded";
    assert_fails_with(b"loop", &["--cpu-seconds", "1"], message);
    assert_fails_with(
        b"loop",
        &["--cpu-seconds", "1", "--isolation", "in-process"],
        message,
    );
}

#[test]
fn output_flood_fails_with_the_output_limit() {
    assert_fails_with(
        b"write",
        &["--max-output", "1"],
        "tapedeck: output limit of 1 MiB exceeded",
    );
}

#[test]
fn trap_fails_with_a_crash_message() {
    assert_fails_with(b"trap", &[], "tapedeck: plugin crashed");
}
