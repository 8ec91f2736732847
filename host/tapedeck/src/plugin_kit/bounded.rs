//! Publishing's conformance check as bounded work: the gateway's [`PluginCheck`].
//!
//! A check runs a component nobody has vetted yet, so it gets what a conversion gets and
//! no more:
//! - the same limits: every converter run of the suite is sized like a job of that input
//!   of the publishing tenant (the `--run-*` settings tightened by its limits: CPU,
//!   memory, output, wall time);
//! - a process of its own (`tapedeck plugin-check-run`, in a new process group, the
//!   component on stdin, the report as JSON on stdout), so stopping it is one `kill` of
//!   the group: the check and every runner it started. That happens when it runs past
//!   [`CHECK_DEADLINE`], and when the publish request is abandoned (the client went away:
//!   the request's future, and with it the [`RunningCheck`], is dropped);
//! - a slot: at most `--max-concurrent-checks` run at once per process (default 1);
//!   others wait in line up to `--max-check-wait-secs`, then answer `checks_busy` (503);
//! - the bill: the CPU time of the check and its runners counts against the publishing
//!   tenant's `cpu_seconds_per_hour` (the usage counters the worker adds jobs' CPU to).
//!
//! Contact points: `serve` builds a [`BoundedCheck`] into the gateway's state; `cli`
//! runs [`run_child`] for `plugin-check-run`; `check` is the suite itself.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use tapedeck_model::registry::{CheckError, CheckReport, CheckRequest, PluginCheck};
use tapedeck_model::run_limits::LimitPolicy;
use tapedeck_model::tenant::TenantLimits;
use tapedeck_store::queue::JobQueue;

use super::check::{self, Depth, Report};

/// The longest one check may run, whatever its limits per case add up to.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(120);

/// Largest component a check reads (the registry's own limit is lower).
const MAX_COMPONENT: u64 = 128 << 20;

/// Largest report a check may print.
const MAX_REPORT: u64 = 4 << 20;

/// Checks components in child processes, a few at a time (see the module doc).
pub struct BoundedCheck {
    /// The compile cache the child processes share with the service.
    cache_dir: PathBuf,
    /// What each converter run of the suite may spend: the service's `--run-*` settings
    /// (tightened, for a tenant's check, by the tenant limits as for its jobs).
    policy: LimitPolicy,
    /// The server defaults of the tenant limits (`--tenant-defaults`).
    tenant_defaults: TenantLimits,
    /// One permit per check that may run at once.
    slots: Arc<Semaphore>,
    /// How long a check waits for a slot before answering `checks_busy`.
    wait: Duration,
    /// Where the CPU time of a tenant's check is counted.
    queue: JobQueue,
}

impl BoundedCheck {
    pub fn new(
        cache_dir: PathBuf,
        policy: LimitPolicy,
        tenant_defaults: TenantLimits,
        max_concurrent: usize,
        wait: Duration,
        queue: JobQueue,
    ) -> Self {
        Self {
            cache_dir,
            policy,
            tenant_defaults,
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            wait,
            queue,
        }
    }

    /// The limits of `tenant`'s runs, as the worker sizes its jobs' (none: the
    /// operator's, the `--run-*` settings as they are).
    async fn policy_for(&self, tenant: Option<&str>) -> LimitPolicy {
        let Some(tenant) = tenant else {
            return self.policy.clone();
        };
        let own = match tapedeck_store::tenants::load_cached(self.queue.pool(), tenant).await {
            Ok(t) => t.map(|t| t.limits).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(tenant, error = %e, "the tenant's limits are unknown; checking under the server's");
                TenantLimits::default()
            }
        };
        self.policy
            .for_tenant(tenant, &self.tenant_defaults)
            .for_tenant(tenant, &own)
    }

    /// Runs one check in a child process; `Ok` carries the suite's report.
    async fn run(&self, request: CheckRequest<'_>) -> Result<Report, CheckError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            CheckError::Refused(format!("the check could not run ({what}: {e})"))
        };
        let exe = tapedeck_runtime::running_executable()
            .map_err(|e| failed("finding this executable", &e))?;
        let policy = self.policy_for(request.tenant).await;
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("plugin-check-run")
            .args(ChildArgs::of(request.stage, &self.cache_dir, &policy).to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let parent = std::process::id() as libc::pid_t;
        let cpu_seconds = CHECK_DEADLINE.as_secs();
        // SAFETY: between fork and exec, only async-signal-safe calls (setrlimit, prctl,
        // getppid) on values computed before the fork.
        unsafe {
            command.pre_exec(move || {
                let cpu = libc::rlimit {
                    rlim_cur: cpu_seconds,
                    rlim_max: cpu_seconds + 1,
                };
                if libc::setrlimit(libc::RLIMIT_CPU, &cpu) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                tapedeck_runtime::die_with_parent(parent, libc::SIGKILL)
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| failed("starting the check", &e))?;
        let mut running = RunningCheck {
            pgid: child.id().unwrap_or(0) as libc::pid_t,
            tenant: request.tenant.map(str::to_owned),
            queue: self.queue.clone(),
            finished: false,
        };
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let mut stdout = child.stdout.take().expect("stdout was piped");
        let bytes = request.bytes;
        let exchange = async {
            // The child reads the whole component before it prints anything.
            stdin.write_all(bytes).await?;
            drop(stdin);
            let mut out = Vec::new();
            (&mut stdout).take(MAX_REPORT).read_to_end(&mut out).await?;
            child.wait().await?;
            Ok::<_, std::io::Error>(out)
        };
        let out = match tokio::time::timeout(CHECK_DEADLINE, exchange).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(failed("talking to the check", &e)),
            // `running` is dropped on the way out: the group is killed and its CPU counted.
            Err(_) => {
                return Err(CheckError::Refused(format!(
                    "checking the component took more than {} s",
                    CHECK_DEADLINE.as_secs()
                )));
            }
        };
        let answer: ChildAnswer =
            serde_json::from_slice(&out).map_err(|e| failed("reading its report", &e))?;
        running.finished(answer.cpu_ms).await;
        match answer.outcome {
            ChildOutcome::Report(report) => Ok(*report),
            ChildOutcome::Error(e) => Err(failed("the suite", &e)),
        }
    }
}

impl PluginCheck for BoundedCheck {
    fn check<'a>(
        &'a self,
        request: CheckRequest<'a>,
    ) -> BoxFuture<'a, Result<CheckReport, CheckError>> {
        Box::pin(async move {
            let slot = match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
                .await
            {
                Ok(Ok(slot)) => slot,
                _ => {
                    return Err(CheckError::Busy(format!(
                        "every conformance check slot stayed busy for {} s; publish again later",
                        self.wait.as_secs()
                    )));
                }
            };
            let report = self.run(request).await;
            drop(slot);
            verdict(report?)
        })
    }
}

/// A check process running: dropped before it finished (a deadline, an abandoned
/// request), it kills the whole process group and counts what the group had spent.
struct RunningCheck {
    /// The check's process group (its pid: it leads the group).
    pgid: libc::pid_t,
    tenant: Option<String>,
    queue: JobQueue,
    finished: bool,
}

impl RunningCheck {
    /// The check ended by itself, having used `cpu_ms` (with its runners).
    async fn finished(&mut self, cpu_ms: u64) {
        self.finished = true;
        charge(&self.queue, self.tenant.as_deref(), cpu_ms).await;
    }
}

impl Drop for RunningCheck {
    fn drop(&mut self) {
        if self.finished || self.pgid <= 0 {
            return;
        }
        let cpu_ms = group_cpu_ms(self.pgid);
        // SAFETY: kill(2) on our own child's process group.
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
        tracing::info!(
            tenant = self.tenant.as_deref().unwrap_or("operator"),
            cpu_ms,
            "conformance check stopped"
        );
        if let (Some(tenant), Ok(runtime)) =
            (self.tenant.clone(), tokio::runtime::Handle::try_current())
        {
            let queue = self.queue.clone();
            runtime.spawn(async move { charge(&queue, Some(&tenant), cpu_ms).await });
        }
    }
}

/// Adds a check's CPU time to the publishing tenant's usage (the operator's checks are
/// nobody's budget).
async fn charge(queue: &JobQueue, tenant: Option<&str>, cpu_ms: u64) {
    let Some(tenant) = tenant.filter(|_| cpu_ms > 0) else {
        return;
    };
    if let Err(e) = queue.record_cpu(tenant, cpu_ms).await {
        tracing::warn!(tenant, error = %e, "the check's CPU time was not recorded");
    }
}

/// CPU time of every process in group `pgid` (user + system, with their reaped
/// children), milliseconds: read from `/proc` just before the group is killed.
fn group_cpu_ms(pgid: libc::pid_t) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses. After
        // it: field 3 is state, 5 pgrp, 14-17 utime stime cutime cstime.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<i64>().ok());
        if field(5) != Some(i64::from(pgid)) {
            continue;
        }
        let used: i64 = (14..=17).filter_map(field).sum();
        total += used.max(0) as u64;
    }
    total * 1000 / ticks
}

/// The verdict publishing acts on: refused with the failed required cases, or accepted
/// with the smoke run and the other cases' results recorded on the plugin.
pub fn verdict(report: Report) -> Result<CheckReport, CheckError> {
    if let Some(why) = report.refusal() {
        return Err(CheckError::Refused(why));
    }
    let passed = report.cases.iter().filter(|c| c.passed).count();
    let smoke = report
        .cases
        .iter()
        .find(|c| c.name.starts_with("smoke"))
        .map(|c| c.detail.clone())
        .unwrap_or_default();
    let failures = report.failures();
    let summary = if failures.is_empty() {
        format!("smoke: {smoke}; conformance: all {passed} cases passed")
    } else {
        format!(
            "smoke: {smoke}; conformance: {passed} of {} cases passed; failed: {}",
            report.cases.len(),
            failures.join("; ")
        )
    };
    Ok(CheckReport {
        compile_ms: report.compile_ms,
        world: report.world,
        smoke: summary,
        smoke_ms: report.cases.iter().skip(1).map(|c| c.ms).sum(),
        failures,
    })
}

/// Arguments of `tapedeck plugin-check-run` (internal): the stage, the compile cache,
/// and the service's run limits.
#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    #[arg(long)]
    stage: String,
    #[arg(long)]
    cache_dir: PathBuf,
    #[arg(long)]
    cpu_base_ms: u64,
    #[arg(long)]
    cpu_per_minute_ms: u64,
    #[arg(long)]
    cpu_max_ms: u64,
    #[arg(long)]
    wall_max_ms: u64,
    #[arg(long)]
    max_memory_bytes: u64,
    #[arg(long)]
    max_output_bytes: u64,
}

impl ChildArgs {
    fn of(stage: &str, cache_dir: &Path, p: &LimitPolicy) -> Self {
        let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        Self {
            stage: stage.to_owned(),
            cache_dir: cache_dir.to_owned(),
            cpu_base_ms: ms(p.cpu_base),
            cpu_per_minute_ms: ms(p.cpu_per_audio_minute),
            cpu_max_ms: ms(p.cpu_max),
            wall_max_ms: ms(p.wall_max),
            max_memory_bytes: p.max_memory_bytes,
            max_output_bytes: p.max_output_bytes,
        }
    }

    fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = vec![
            "--stage".into(),
            self.stage.clone().into(),
            "--cache-dir".into(),
            self.cache_dir.clone().into(),
        ];
        for (flag, value) in [
            ("--cpu-base-ms", self.cpu_base_ms),
            ("--cpu-per-minute-ms", self.cpu_per_minute_ms),
            ("--cpu-max-ms", self.cpu_max_ms),
            ("--wall-max-ms", self.wall_max_ms),
            ("--max-memory-bytes", self.max_memory_bytes),
            ("--max-output-bytes", self.max_output_bytes),
        ] {
            out.push(flag.into());
            out.push(value.to_string().into());
        }
        out
    }

    fn policy(&self) -> LimitPolicy {
        LimitPolicy {
            cpu_base: Duration::from_millis(self.cpu_base_ms),
            cpu_per_audio_minute: Duration::from_millis(self.cpu_per_minute_ms),
            cpu_max: Duration::from_millis(self.cpu_max_ms),
            wall_max: Duration::from_millis(self.wall_max_ms),
            max_memory_bytes: self.max_memory_bytes,
            max_output_bytes: self.max_output_bytes,
            ..LimitPolicy::default()
        }
    }
}

/// What the child prints: the suite's report or why it could not run, and the CPU time
/// it and its runners used.
#[derive(Debug, Serialize, Deserialize)]
struct ChildAnswer {
    outcome: ChildOutcome,
    cpu_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ChildOutcome {
    Report(Box<Report>),
    Error(String),
}

/// `tapedeck plugin-check-run`: reads the component from stdin, runs the quick suite,
/// prints a [`ChildAnswer`].
pub fn run_child(args: ChildArgs) -> ExitCode {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_COMPONENT).read_to_end(&mut bytes) {
        eprintln!("error: reading the component: {e}");
        return ExitCode::from(2);
    }
    let outcome = match check::check(
        &args.cache_dir,
        &args.stage,
        &bytes,
        &args.policy(),
        check::Options {
            depth: Depth::Quick,
            incremental: false,
            cases: None,
        },
        &mut |_| {},
    ) {
        Ok(report) => ChildOutcome::Report(Box::new(report)),
        Err(e) => ChildOutcome::Error(e),
    };
    let answer = ChildAnswer {
        outcome,
        cpu_ms: own_cpu_ms(),
    };
    println!(
        "{}",
        serde_json::to_string(&answer).expect("answers serialize")
    );
    ExitCode::SUCCESS
}

/// CPU time of this process and of its children it waited for (the runners).
fn own_cpu_ms() -> u64 {
    let used = |who: libc::c_int| {
        // SAFETY: `rusage` is plain integers, for which all-zero bytes are a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes into the struct it is given, which lives until then.
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return 0;
        }
        let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
        ms(usage.ru_utime) + ms(usage.ru_stime)
    };
    used(libc::RUSAGE_SELF) + used(libc::RUSAGE_CHILDREN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_args_carry_the_policy() {
        let policy = LimitPolicy {
            cpu_base: Duration::from_millis(1500),
            max_memory_bytes: 16 << 20,
            ..LimitPolicy::default()
        };
        let args = ChildArgs::of("converter", Path::new("/cache"), &policy);
        let parsed = <ChildArgsParser as clap::Parser>::try_parse_from(
            std::iter::once("x".into()).chain(args.to_args()),
        )
        .unwrap();
        assert_eq!(parsed.args.policy(), policy);
        assert_eq!(parsed.args.stage, "converter");
    }

    #[derive(clap::Parser)]
    struct ChildArgsParser {
        #[command(flatten)]
        args: ChildArgs,
    }

    #[test]
    fn a_group_that_does_not_exist_used_nothing() {
        assert_eq!(group_cpu_ms(i32::MAX), 0);
    }
}
