//! The plugin runtime against real components: the hostile guest misbehaves in every way
//! it can, in both isolation modes, and each time the run must fail with the limit it hit
//! while the next run in the same process still works.

use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapedeck::runtime::{
    CacheOutcome, ConvertOptions, ConverterPlugin, Isolation, PluginRuntime, RunError, RunLimits,
    RuntimeConfig, Summary,
};
use tempfile::TempDir;

const HOSTILE_WASM: &str = env!("TAPEDECK_HOSTILE_WASM");
const RUNNER: &str = env!("CARGO_BIN_EXE_tapedeck-test-serve");

/// Small limits, so the hostile runs end quickly.
fn test_limits() -> RunLimits {
    RunLimits {
        max_memory_bytes: 32 << 20,
        cpu_time: Duration::from_secs(1),
        max_output_bytes: 4 << 20,
        ..RunLimits::default()
    }
}

/// A runtime with its own cache dir, and the hostile guest loaded into it.
struct Fixture {
    dir: TempDir,
    runtime: PluginRuntime,
    plugin: Arc<ConverterPlugin>,
}

impl Fixture {
    fn new(isolation: Isolation) -> Self {
        let dir = TempDir::new().unwrap();
        let runtime = runtime(isolation, &dir.path().join("cache"));
        let plugin = runtime.load_converter(&hostile_bytes()).unwrap();
        Self {
            dir,
            runtime,
            plugin,
        }
    }

    /// Runs the guest on `input` and returns its result and output bytes.
    fn run(&self, input: &[u8], limits: &RunLimits) -> (Result<Summary, RunError>, Vec<u8>) {
        let input_path = self.dir.path().join("input");
        let output_path = self.dir.path().join("output");
        fs::write(&input_path, input).unwrap();
        let input = File::open(&input_path).unwrap();
        let output = create(&output_path);
        let mut progress = Vec::new();
        let result = self.plugin.convert(
            &input,
            &output,
            &ConvertOptions::default(),
            limits,
            &mut |f| progress.push(f),
        );
        assert!(
            progress.windows(2).all(|w| w[0] <= w[1]),
            "progress went backwards: {progress:?}"
        );
        (result, fs::read(&output_path).unwrap())
    }

    /// Asserts that `input` fails with `expected`, then that an echo run still succeeds.
    fn assert_stopped(&self, input: &[u8], expected: RunError) {
        let started = Instant::now();
        let (result, _) = self.run(input, &test_limits());
        assert_eq!(
            result.unwrap_err(),
            expected,
            "for input {:?}",
            String::from_utf8_lossy(input)
        );
        eprintln!(
            "{:?}: stopped after {:?}",
            String::from_utf8_lossy(input),
            started.elapsed()
        );
        self.assert_echo_works();
    }

    fn assert_echo_works(&self) {
        let input = b"echo: a perfectly ordinary input".repeat(10_000);
        let (result, output) = self.run(&input, &test_limits());
        let summary = result.expect("an echo run after a failed one succeeds");
        assert_eq!(summary.output_bytes, input.len() as u64);
        assert!(output == input, "echo output differs from its input");
    }
}

fn runtime(isolation: Isolation, cache_dir: &Path) -> PluginRuntime {
    PluginRuntime::new(RuntimeConfig {
        cache_dir: cache_dir.to_path_buf(),
        isolation,
        runner_exe: RUNNER.into(),
        incremental: false,
    })
    .unwrap()
}

fn hostile_bytes() -> Vec<u8> {
    fs::read(HOSTILE_WASM).unwrap()
}

fn create(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

macro_rules! isolation_tests {
    ($module:ident, $isolation:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn endless_loop_hits_the_cpu_limit() {
                Fixture::new($isolation).assert_stopped(
                    b"loop",
                    RunError::CpuLimit {
                        limit: Duration::from_secs(1),
                    },
                );
            }

            #[test]
            fn unbounded_allocation_hits_the_memory_limit() {
                Fixture::new($isolation)
                    .assert_stopped(b"alloc", RunError::MemoryLimit { limit: 32 << 20 });
            }

            #[test]
            fn flooding_the_sink_hits_the_output_limit() {
                Fixture::new($isolation)
                    .assert_stopped(b"write", RunError::OutputLimit { limit: 4 << 20 });
            }

            #[test]
            fn unreachable_is_a_trap() {
                let fixture = Fixture::new($isolation);
                let (result, _) = fixture.run(b"trap", &test_limits());
                match result {
                    Err(RunError::Trap { message }) => {
                        assert!(message.contains("unreachable"), "{message}")
                    }
                    other => panic!("expected a trap, got {other:?}"),
                }
                fixture.assert_echo_works();
            }

            #[test]
            fn unbounded_recursion_overflows_the_stack() {
                Fixture::new($isolation).assert_stopped(b"recurse", RunError::StackOverflow);
            }

            #[test]
            fn echo_succeeds_repeatedly() {
                let fixture = Fixture::new($isolation);
                for _ in 0..3 {
                    fixture.assert_echo_works();
                }
            }

            #[test]
            fn the_guest_sees_no_files_env_network_or_time() {
                let fixture = Fixture::new($isolation);
                let (result, output) = fixture.run(b"probe", &test_limits());
                result.unwrap();
                let report = String::from_utf8(output).unwrap();
                let expected = [
                    "env=[]",
                    "args=[]",
                    "root=Err(NotFound)",
                    "passwd=Err(NotFound)",
                    // 2000-01-01T00:00:00Z, frozen.
                    "wall=Ok(946684800000000000)",
                    "elapsed=0",
                    "tcp=Err(PermissionDenied)",
                    "udp=Err(PermissionDenied)",
                ];
                for line in expected {
                    assert!(
                        report.lines().any(|l| l.starts_with(line)),
                        "no `{line}` in:\n{report}"
                    );
                }
            }

            #[test]
            fn a_second_load_hits_the_disk_cache() {
                let fixture = Fixture::new($isolation);
                assert_eq!(fixture.plugin.cache_outcome(), CacheOutcome::Compiled);
                assert!(fixture.plugin.artifact().exists());
                let artifact = fixture
                    .plugin
                    .artifact()
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap();
                assert!(artifact.ends_with(".cwasm"), "{artifact}");

                // A new runtime, as after a restart.
                let restarted = runtime($isolation, fixture.plugin.artifact().parent().unwrap());
                let started = Instant::now();
                let again = restarted.load_converter(&hostile_bytes()).unwrap();
                eprintln!("cache-hit load: {:?}", started.elapsed());
                assert_eq!(again.cache_outcome(), CacheOutcome::Hit);
                assert_eq!(again.digest(), fixture.plugin.digest());
                assert_eq!(again.artifact(), fixture.plugin.artifact());
                drop(fixture.runtime);
            }

            #[test]
            fn run_overhead() {
                let fixture = Fixture::new($isolation);
                fixture.assert_echo_works();
                let runs = 20;
                let started = Instant::now();
                for _ in 0..runs {
                    let (result, _) = fixture.run(b"echo", &test_limits());
                    result.unwrap();
                }
                eprintln!(
                    "{:?}: {:?} per tiny run",
                    $isolation,
                    started.elapsed() / runs
                );
            }
        }
    };
}

isolation_tests!(subprocess, Isolation::Subprocess);
isolation_tests!(in_process, Isolation::InProcess);

#[test]
fn a_component_of_another_world_is_refused_at_load() {
    let dir = TempDir::new().unwrap();
    let runtime = runtime(Isolation::InProcess, dir.path());
    // A valid core module, not a component.
    let error = match runtime.load_converter(b"\0asm\x01\0\0\0") {
        Err(error) => error,
        Ok(_) => panic!("a core module loaded as a converter"),
    };
    assert!(
        error.to_string().contains("not a valid component"),
        "{error}"
    );
}
