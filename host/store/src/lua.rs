//! Every Lua script Tapedeck runs in Redis: one file each in `host/store/lua/`, shared
//! functions in `lua/lib_*.lua` put in front of the scripts that use them, each script
//! built once per process (`SCRIPT LOAD` once per Redis, then `EVALSHA`).
//!
//! A script's file says what its keys and arguments are, by name, in two header lines:
//!
//! ```lua
//! -- KEYS: job, usage
//! -- ARGV: channel, digest, canary
//! ```
//!
//! and callers give them by those names, in that order ([`Lua::call`], then
//! [`Call::key`] / [`Call::arg`]): a call that names a key or argument the header does
//! not have there, or leaves one out, panics (in the suite, at the first call) instead of
//! shifting every argument after it. An `ARGV` list may end in `name...`: any number of
//! arguments follow. The unit tests below hold each header to its body: every
//! `KEYS[n]`/`ARGV[n]` the script reads is named, every name is read.
//!
//! Every script touches the keys of one Cluster slot (see redis/README.md).

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{FromRedisValue, RedisResult, Script, ScriptInvocation, ToRedisArgs};

/// A script and the names of its keys and arguments.
pub struct Lua {
    /// The file, for messages.
    pub file: &'static str,
    script: Script,
    keys: Vec<String>,
    args: Vec<String>,
    /// The argument list ends in `name...`.
    variadic: bool,
}

impl Lua {
    fn new(file: &'static str, libs: &[&str], body: &str) -> Self {
        let mut source = String::new();
        for lib in libs {
            source.push_str(lib);
        }
        source.push_str(body);
        let header = |what: &str| -> Vec<String> {
            // The last such line (the one right before the code) is the header.
            body.lines()
                .rev()
                .find_map(|l| l.strip_prefix(&format!("-- {what}:")))
                .map(|names| {
                    names
                        .split(',')
                        .map(|n| n.trim().to_owned())
                        .filter(|n| !n.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let keys = header("KEYS");
        let mut args = header("ARGV");
        let variadic = args.last().is_some_and(|a| a.ends_with("..."));
        if variadic {
            args.pop();
        }
        Self {
            file,
            script: Script::new(&source),
            keys,
            args,
            variadic,
        }
    }

    /// A call to fill in, key by key and argument by argument.
    pub fn call(&self) -> Call<'_> {
        Call {
            lua: self,
            invocation: self.script.prepare_invoke(),
            keys: 0,
            args: 0,
        }
    }
}

/// One call of a [`Lua`] script being put together.
pub struct Call<'a> {
    lua: &'a Lua,
    invocation: ScriptInvocation<'a>,
    keys: usize,
    args: usize,
}

impl Call<'_> {
    /// The next key, which the script's header must call `name`.
    pub fn key<T: ToRedisArgs>(&mut self, name: &str, key: T) -> &mut Self {
        let want = self.lua.keys.get(self.keys);
        assert!(
            want.is_some_and(|w| w == name),
            "{}: key {} is {want:?}, not {name:?}",
            self.lua.file,
            self.keys + 1
        );
        self.invocation.key(key);
        self.keys += 1;
        self
    }

    /// The next argument, which the script's header must call `name` (past the named
    /// ones of a variadic list: any name).
    pub fn arg<T: ToRedisArgs>(&mut self, name: &str, arg: T) -> &mut Self {
        let want = self.lua.args.get(self.args);
        assert!(
            want.is_some_and(|w| w == name) || (want.is_none() && self.lua.variadic),
            "{}: argument {} is {want:?}, not {name:?}",
            self.lua.file,
            self.args + 1
        );
        self.invocation.arg(arg);
        self.args += 1;
        self
    }

    /// Runs the script (`EVALSHA`, loading it first if Redis does not have it).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        conn: &mut (impl ConnectionLike + Send),
    ) -> RedisResult<T> {
        assert!(
            self.keys == self.lua.keys.len() && self.args >= self.lua.args.len(),
            "{}: called with {} of {} keys and {} of {} arguments",
            self.lua.file,
            self.keys,
            self.lua.keys.len(),
            self.args,
            self.lua.args.len()
        );
        self.invocation.invoke_async(conn).await
    }
}

/// `lua!(NAME, "file.lua", [libs])`: a script of `lua/`, with the shared functions of
/// the `lib_*.lua` files named before it.
macro_rules! lua {
    ($(#[$doc:meta])* $name:ident, $file:literal $(, $lib:literal)*) => {
        $(#[$doc])*
        pub static $name: LazyLock<Lua> = LazyLock::new(|| {
            Lua::new(
                $file,
                &[$(include_str!(concat!("../lua/", $lib))),*],
                include_str!(concat!("../lua/", $file)),
            )
        });
    };
}

// The job pipeline (`crate::queue`): one script per transition.
lua!(
    /// `lua/enqueue.lua`
    ENQUEUE, "enqueue.lua", "lib_usage.lua"
);
lua!(
    /// `lua/delete.lua`
    DELETE, "delete.lua", "lib_usage.lua"
);
lua!(
    /// `lua/expire_job.lua`
    EXPIRE_JOB, "expire_job.lua", "lib_usage.lua"
);
lua!(
    /// `lua/start_attempt.lua`
    START_ATTEMPT, "start_attempt.lua"
);
lua!(
    /// `lua/progress.lua`
    PROGRESS, "progress.lua"
);
lua!(
    /// `lua/complete.lua`
    COMPLETE, "complete.lua", "lib_usage.lua", "lib_trim.lua"
);
lua!(
    /// `lua/fail.lua`
    FAIL, "fail.lua", "lib_usage.lua", "lib_trim.lua"
);
lua!(
    /// `lua/requeue_failed.lua`
    REQUEUE_FAILED, "requeue_failed.lua", "lib_usage.lua"
);
lua!(
    /// `lua/retry_later.lua`
    RETRY_LATER, "retry_later.lua", "lib_trim.lua"
);
lua!(
    /// `lua/record_cpu.lua`
    RECORD_CPU, "record_cpu.lua", "lib_usage.lua"
);
lua!(
    /// `lua/promote_retry.lua`
    PROMOTE_RETRY, "promote_retry.lua"
);
lua!(
    /// `lua/take.lua`
    TAKE, "take.lua"
);
lua!(
    /// `lua/pending.lua`
    PENDING, "pending.lua"
);
lua!(
    /// `lua/safe_trim.lua`
    SAFE_TRIM, "safe_trim.lua"
);
lua!(
    /// `lua/charge_stored.lua`
    CHARGE_STORED, "charge_stored.lua"
);
lua!(
    /// `lua/heartbeat.lua`
    HEARTBEAT, "heartbeat.lua"
);

// Weighted fair dispatch (`crate::sched`).
lua!(
    /// `lua/sched_add.lua`
    SCHED_ADD, "sched_add.lua", "lib_sched.lua"
);
lua!(
    /// `lua/sched_finish.lua`
    SCHED_FINISH, "sched_finish.lua", "lib_sched.lua"
);
lua!(
    /// `lua/sched_pick.lua`
    SCHED_PICK, "sched_pick.lua", "lib_sched.lua"
);
lua!(
    /// `lua/sched_park.lua`
    SCHED_PARK, "sched_park.lua"
);

// Sessions, logins, the registry, canaries, notifications, the janitor.
lua!(
    /// `lua/session_record.lua`
    SESSION_RECORD, "session_record.lua"
);
lua!(
    /// `lua/session_check.lua`
    SESSION_CHECK, "session_check.lua"
);
lua!(
    /// `lua/reserve_second.lua`
    RESERVE_SECOND, "reserve_second.lua"
);
lua!(
    /// `lua/login_attempt.lua`
    LOGIN_ATTEMPT, "login_attempt.lua"
);
lua!(
    /// `lua/step_back.lua`
    STEP_BACK, "step_back.lua"
);
lua!(
    /// `lua/canary_end.lua`
    CANARY_END, "canary_end.lua"
);
lua!(
    /// `lua/notify_plan.lua`
    NOTIFY_PLAN, "notify_plan.lua"
);
lua!(
    /// `lua/release_lock.lua`
    RELEASE_LOCK, "release_lock.lua"
);
lua!(
    /// `lua/watch.lua`
    WATCH, "watch.lua"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script with its body (without the shared functions), for the header checks.
    fn all() -> Vec<(&'static Lua, &'static str)> {
        macro_rules! body {
            ($($name:ident: $file:literal),* $(,)?) => {
                vec![$((&*$name, include_str!(concat!("../lua/", $file)))),*]
            };
        }
        body![
            ENQUEUE: "enqueue.lua", DELETE: "delete.lua", EXPIRE_JOB: "expire_job.lua",
            START_ATTEMPT: "start_attempt.lua", PROGRESS: "progress.lua",
            COMPLETE: "complete.lua", FAIL: "fail.lua", REQUEUE_FAILED: "requeue_failed.lua",
            RETRY_LATER: "retry_later.lua", RECORD_CPU: "record_cpu.lua",
            PROMOTE_RETRY: "promote_retry.lua", TAKE: "take.lua", PENDING: "pending.lua",
            SAFE_TRIM: "safe_trim.lua", CHARGE_STORED: "charge_stored.lua",
            HEARTBEAT: "heartbeat.lua", SCHED_ADD: "sched_add.lua",
            SCHED_FINISH: "sched_finish.lua", SCHED_PICK: "sched_pick.lua",
            SCHED_PARK: "sched_park.lua", SESSION_RECORD: "session_record.lua",
            SESSION_CHECK: "session_check.lua", RESERVE_SECOND: "reserve_second.lua",
            LOGIN_ATTEMPT: "login_attempt.lua", STEP_BACK: "step_back.lua",
            CANARY_END: "canary_end.lua", NOTIFY_PLAN: "notify_plan.lua",
            RELEASE_LOCK: "release_lock.lua", WATCH: "watch.lua",
        ]
    }

    /// The indices `KEYS[n]` / `ARGV[n]` a body reads (comments left out).
    fn used(body: &str, table: &str) -> std::collections::BTreeSet<usize> {
        let pattern = format!("{table}[");
        body.lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .flat_map(|l| {
                l.match_indices(&pattern)
                    .filter_map(|(i, _)| {
                        let rest = &l[i + pattern.len()..];
                        rest[..rest.find(']')?].parse().ok()
                    })
                    .collect::<Vec<usize>>()
            })
            .collect()
    }

    #[test]
    fn every_key_and_argument_a_script_reads_is_named_in_its_header_and_used() {
        for (lua, body) in all() {
            let keys = used(body, "KEYS");
            let expect: std::collections::BTreeSet<usize> = (1..=lua.keys.len()).collect();
            assert_eq!(
                keys, expect,
                "{}: KEYS read vs named {:?}",
                lua.file, lua.keys
            );
            let args = used(body, "ARGV");
            let named: std::collections::BTreeSet<usize> = (1..=lua.args.len()).collect();
            if lua.variadic {
                // `unpack(ARGV, n)` reads the rest: the named ones must be read.
                assert!(
                    named.is_subset(&args) || body.contains("unpack(ARGV"),
                    "{}: named arguments not read",
                    lua.file
                );
            } else {
                assert_eq!(
                    args, named,
                    "{}: ARGV read vs named {:?}",
                    lua.file, lua.args
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "argument 2 is Some(\"digest\"), not \"canary\"")]
    fn a_call_that_skips_an_argument_panics() {
        let mut call = START_ATTEMPT.call();
        call.key("job", "j");
        call.arg("channel", "c").arg("canary", "x");
    }
}
