//! Runs one conversion in a child process: `<runner_exe> plugin-run --artifact <cwasm>
//! --request <json>`.
//!
//! Why a process: its CPU time can be capped by the kernel (`RLIMIT_CPU`), so the guest's
//! generated code needs no epoch or fuel checks, and whatever the guest does, the
//! parent's address space is untouched.
//!
//! Protocol: the input file is the child's stdin, the output file an inherited
//! descriptor named in the request. The child writes one JSON [`RunnerMessage`] per line
//! to its stdout: events while it runs, then the result. The parent treats the child as
//! untrusted: a line it cannot parse is ignored, a missing result becomes an error, and a
//! watchdog kills a child that outlives [`RunLimits::wall_clock`] (a guest that sleeps or
//! waits uses no CPU, so `RLIMIT_CPU` alone never ends it) or whose run is cancelled
//! ([`RunCancel`]: a deleted job, a shutdown), within [`WATCHDOG_TICK`] of either.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use tapedeck_model::convert::RunCancel;

use super::converter::{self, CpuGuard, RunEvent, wit};
use super::engine;
use super::error::RunError;
use super::limits::RunLimits;
use super::{Isolation, Summary};

/// Longest protocol line the parent reads; longer ones are cut and then fail to parse.
const MAX_MESSAGE: u64 = 64 * 1024;
/// How much of the child's own stderr is kept to explain a crash.
const STDERR_TAIL: usize = 4 * 1024;
/// How often the watchdog looks at the run's cancel flag: a cancelled run's child is
/// killed within this.
const WATCHDOG_TICK: Duration = Duration::from_millis(50);

/// What the parent asks of the child, as the `--request` argument.
#[derive(Debug, Serialize, Deserialize)]
struct RunnerRequest {
    options: wit::Options,
    limits: RunLimits,
    /// The inherited descriptor of the output file.
    output_fd: RawFd,
}

/// One line of the child's stdout.
#[derive(Debug, Serialize, Deserialize)]
enum RunnerMessage {
    Event(RunEvent),
    Finished(Result<Summary, RunError>),
}

/// Runs a conversion in a runner child and waits for it.
/// In a forked child before exec: asks the kernel for `signal` when the parent dies (a
/// `kill -9` of the service must not leave runs converting on), and exits at once if
/// the parent already died before the request took effect.
///
/// # Safety
/// Only between fork and exec; makes async-signal-safe calls only.
pub unsafe fn die_with_parent(parent: libc::pid_t, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: prctl and getppid are async-signal-safe system calls.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the run's parts, each borrowed from the caller
pub(crate) fn run_in_child(
    runner_exe: &Path,
    artifact: &Path,
    input: &File,
    output: &File,
    options: &wit::Options,
    limits: &RunLimits,
    on_event: &mut dyn FnMut(RunEvent),
    cpu_used: &mut Option<Duration>,
    cancel: &RunCancel,
) -> Result<Summary, RunError> {
    if cancel.is_cancelled() {
        return Err(RunError::Cancelled);
    }
    let stdin = input
        .try_clone()
        .map_err(|e| RunError::io("cannot use the input", e))?;
    // The clone is close-on-exec; `pre_exec` clears that in the child only.
    let output = output
        .try_clone()
        .map_err(|e| RunError::io("cannot use the output", e))?;
    let output_fd = output.as_raw_fd();
    let request = RunnerRequest {
        options: *options,
        limits: limits.clone(),
        output_fd,
    };
    let request = serde_json::to_string(&request).expect("the request is plain data");
    let cpu_seconds = limits.cpu_time.as_secs() + u64::from(limits.cpu_time.subsec_nanos() > 0);
    let mut command = Command::new(runner_exe);
    command
        .args(["plugin-run", "--artifact"])
        .arg(artifact)
        .arg("--request")
        .arg(request)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (setrlimit, fcntl, prctl, getppid) on values computed before the fork.
    unsafe {
        command.pre_exec(move || {
            let cpu = libc::rlimit {
                rlim_cur: cpu_seconds.max(1),
                rlim_max: cpu_seconds.max(1) + 1,
            };
            if libc::setrlimit(libc::RLIMIT_CPU, &cpu) != 0
                || libc::fcntl(output_fd, libc::F_SETFD, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            die_with_parent(parent, libc::SIGKILL)
        });
    }
    let mut child = command.spawn().map_err(|e| {
        RunError::io(
            &format!("cannot start the plugin runner {}", runner_exe.display()),
            e,
        )
    })?;
    drop(output);
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let stderr_tail = thread::spawn(move || read_tail(stderr));
    let child = Arc::new(Mutex::new(child));
    let watchdog = Watchdog::start(Arc::clone(&child), limits.wall_clock(), cancel.clone());

    let mut finished = None;
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_MESSAGE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => match serde_json::from_slice(&line) {
                Ok(RunnerMessage::Event(event)) => on_event(event),
                Ok(RunnerMessage::Finished(result)) => finished = Some(result),
                Err(e) => tracing::warn!("ignoring a malformed line from the plugin runner: {e}"),
            },
        }
    }
    let status = wait(&child).map(|(status, cpu)| {
        *cpu_used = cpu;
        status
    });
    let killed = watchdog.stop();
    let stderr_tail = stderr_tail.join().unwrap_or_default();
    let status = status.map_err(|e| RunError::io("cannot wait for the plugin runner", e))?;
    verdict(finished, status, killed, limits, &stderr_tail)
}

/// Decides a run's result from what the child said and how it ended.
fn verdict(
    finished: Option<Result<Summary, RunError>>,
    status: ExitStatus,
    killed: Option<Killed>,
    limits: &RunLimits,
    stderr_tail: &str,
) -> Result<Summary, RunError> {
    if killed == Some(Killed::Cancelled) {
        return Err(RunError::Cancelled);
    }
    if let Some(result) = finished {
        return result;
    }
    if killed == Some(Killed::WallClock) {
        return Err(RunError::WallClockLimit {
            limit: limits.wall_clock(),
        });
    }
    match status.signal() {
        // SIGXCPU at the soft RLIMIT_CPU, SIGKILL at the hard one.
        Some(libc::SIGXCPU | libc::SIGKILL) => Err(RunError::CpuLimit {
            limit: limits.cpu_time,
        }),
        Some(signal) => Err(RunError::Trap {
            message: format!("the plugin runner died of {}", signal_name(signal)),
        }),
        None => Err(RunError::Io {
            message: format!(
                "the plugin runner exited with {status} without a result: {}",
                stderr_tail.trim()
            ),
        }),
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        other => format!("signal {other}"),
    }
}

/// Waits for the child without holding its lock, so the watchdog can still kill it, and
/// measures the CPU time it used (user + system, all its threads): read from
/// `/proc/{pid}/stat` while it is a zombie (exited, not yet reaped, so its pid cannot be
/// reused), then reaped.
fn wait(child: &Mutex<Child>) -> std::io::Result<(ExitStatus, Option<Duration>)> {
    let pid = lock(child).id();
    let mut cpu = None;
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid siginfo_t; WNOWAIT leaves the child waitable, so the
        // `try_wait` below still reaps it and `Child` knows it is gone.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            )
        };
        // SAFETY: waitid filled `info` (or left it zeroed: pid 0 means still running).
        if r != 0 || unsafe { info.si_pid() } != 0 {
            if r == 0 {
                cpu = process_cpu_time(pid);
            }
            break;
        }
        // Reached only after stdout closed, i.e. while the child is exiting.
        thread::sleep(Duration::from_millis(1));
    }
    loop {
        if let Some(status) = lock(child).try_wait()? {
            return Ok((status, cpu));
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// User + system CPU time of process `pid` (fields 14 and 15 of `/proc/{pid}/stat`).
fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(Duration::from_millis(ticks.saturating_mul(1000) / hz))
}

fn lock(child: &Mutex<Child>) -> std::sync::MutexGuard<'_, Child> {
    child
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why the watchdog killed a runner child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Killed {
    /// The run outlived its wall-clock allowance.
    WallClock,
    /// The run's [`RunCancel`] was set.
    Cancelled,
}

/// Kills the child if the run outlives its wall-clock allowance or is cancelled.
struct Watchdog {
    /// Dropped to tell the watchdog the run is over.
    done: mpsc::Sender<()>,
    thread: thread::JoinHandle<Option<Killed>>,
}

impl Watchdog {
    fn start(child: Arc<Mutex<Child>>, allowance: Duration, cancel: RunCancel) -> Self {
        let (done, finished) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            let started = std::time::Instant::now();
            let why = loop {
                let left = allowance.saturating_sub(started.elapsed());
                if left.is_zero() {
                    break Killed::WallClock;
                }
                match finished.recv_timeout(left.min(WATCHDOG_TICK)) {
                    Err(mpsc::RecvTimeoutError::Timeout) if cancel.is_cancelled() => {
                        break Killed::Cancelled;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // The run is over (the sender was dropped).
                    _ => return None,
                }
            };
            // `Child::kill` does nothing once the child has been reaped, so this cannot
            // hit a recycled pid.
            let _ = lock(&child).kill();
            Some(why)
        });
        Self { done, thread }
    }

    /// Stops the watchdog; returns why it killed the child, if it did.
    fn stop(self) -> Option<Killed> {
        drop(self.done);
        self.thread.join().ok().flatten()
    }
}

/// Reads a stream to its end, keeping its last [`STDERR_TAIL`] bytes.
fn read_tail(mut stream: impl Read) -> String {
    let mut tail = Vec::new();
    let mut chunk = [0; 4096];
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// The `plugin-run` subcommand: the child side of [`run_in_child`].
pub fn run_runner_child(artifact: &Path, request: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let result = serve(artifact, request, &mut |event| {
        send(&mut stdout, &RunnerMessage::Event(event));
    });
    send(&mut stdout, &RunnerMessage::Finished(result));
    ExitCode::SUCCESS
}

fn serve(
    artifact: &Path,
    request: &str,
    on_event: &mut dyn FnMut(RunEvent),
) -> Result<Summary, RunError> {
    let request: RunnerRequest =
        serde_json::from_str(request).map_err(|e| RunError::io("bad runner request", e))?;
    let setup = |e: wasmtime::Error| RunError::Instantiate {
        message: format!("{e:#}"),
    };
    let engine = engine::engine_for(Isolation::Subprocess, None).map_err(setup)?;
    let component = engine::deserialize(&engine, artifact).map_err(setup)?;
    let pre = converter::prepare(&engine, &component).map_err(|e| RunError::Instantiate {
        message: e.to_string(),
    })?;
    // SAFETY: the parent set up stdin as the input file and `output_fd` as the inherited
    // output file (see `run_in_child`); nothing else in this process owns them.
    let (input, output) = unsafe { (File::from_raw_fd(0), File::from_raw_fd(request.output_fd)) };
    converter::observe(
        |events| {
            converter::run_converter(
                &pre,
                input,
                output,
                &request.options,
                &request.limits,
                CpuGuard::External,
                events,
            )
        },
        on_event,
    )
}

fn send(stdout: &mut impl Write, message: &RunnerMessage) {
    let mut line = serde_json::to_vec(message).expect("messages are plain data");
    line.push(b'\n');
    // The parent gone means nobody wants the result; there is no one to tell.
    let _ = stdout.write_all(&line).and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signalled(signal: i32) -> ExitStatus {
        ExitStatus::from_raw(signal)
    }

    #[test]
    fn verdict_maps_child_deaths_to_limits() {
        let limits = RunLimits::default();
        let cpu = verdict(None, signalled(libc::SIGXCPU), None, &limits, "");
        assert_eq!(
            cpu,
            Err(RunError::CpuLimit {
                limit: limits.cpu_time
            })
        );
        let killed = verdict(
            None,
            signalled(libc::SIGKILL),
            Some(Killed::WallClock),
            &limits,
            "",
        );
        assert!(matches!(killed, Err(RunError::WallClockLimit { .. })));
        let cancelled = verdict(
            Some(Ok(Summary {
                input_codec: String::new(),
                input_sample_rate: 0,
                input_channels: 0,
                output_sample_rate: 0,
                output_channels: 0,
                output_frames: 0,
                duration_ms: 0,
                output_bytes: 0,
                bitrate_kbps: 0,
            })),
            signalled(libc::SIGKILL),
            Some(Killed::Cancelled),
            &limits,
            "",
        );
        assert_eq!(
            cancelled,
            Err(RunError::Cancelled),
            "a cancelled run never succeeds"
        );
        let segv = verdict(None, signalled(libc::SIGSEGV), None, &limits, "");
        assert!(matches!(segv, Err(RunError::Trap { message }) if message.contains("SIGSEGV")));
        let exited = verdict(
            None,
            ExitStatus::from_raw(1 << 8),
            None,
            &limits,
            "panic: boom\n",
        );
        assert!(matches!(exited, Err(RunError::Io { message }) if message.contains("panic: boom")));
    }

    #[test]
    fn a_reported_result_wins() {
        let reported = Err(RunError::StackOverflow);
        let result = verdict(
            Some(reported.clone()),
            ExitStatus::from_raw(0),
            None,
            &RunLimits::default(),
            "",
        );
        assert_eq!(result, reported);
    }
}
