//! What one run of a plugin may spend ([`RunLimits`]), and how the service sizes a
//! conversion's limits to its input ([`LimitPolicy`]). Enforced by `tapedeck-runtime`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits of one run. `Default` is sized for the converter on a long recording: its
/// streaming design peaks at a few MiB of linear memory, converts 10 minutes of audio in
/// well under 10 s of CPU, and a 3-hour MP3 at 320 kbit/s is ~430 MB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLimits {
    /// Linear memory of all the component's memories together, in bytes.
    pub max_memory_bytes: u64,
    /// CPU time of the run. Subprocess runs round it up to whole seconds.
    pub cpu_time: Duration,
    /// Bytes the guest may write to its output sink.
    pub max_output_bytes: u64,
    /// Elements of all the component's tables together.
    pub max_table_elements: u64,
    /// Core instances, tables and memories a component may create.
    pub max_instances: usize,
    pub max_tables: usize,
    pub max_memories: usize,
    /// The longest a run may take in real time, whatever its CPU allowance (see
    /// [`RunLimits::wall_clock`]).
    #[serde(default = "default_max_wall_time")]
    pub max_wall_time: Duration,
}

/// Half an hour: a 3-hour recording converts in a few minutes of CPU.
const DEFAULT_MAX_WALL_TIME: Duration = Duration::from_secs(30 * 60);

fn default_max_wall_time() -> Duration {
    DEFAULT_MAX_WALL_TIME
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 64 << 20,
            cpu_time: Duration::from_secs(30),
            max_output_bytes: 512 << 20,
            max_table_elements: 100_000,
            max_instances: 32,
            max_tables: 32,
            max_memories: 8,
            max_wall_time: DEFAULT_MAX_WALL_TIME,
        }
    }
}

impl RunLimits {
    /// How long a run may take in real time before it is killed, whatever it is doing:
    /// covers a guest that blocks (sleeps, waits) instead of computing, which `RLIMIT_CPU`
    /// never stops. Twice the CPU time plus 10 s (a loaded machine), at most
    /// `max_wall_time`.
    pub fn wall_clock(&self) -> Duration {
        (self.cpu_time.saturating_mul(2) + Duration::from_secs(10)).min(self.max_wall_time)
    }
}

/// How the service sizes each conversion's [`RunLimits`] (settings of `tapedeck serve`):
/// CPU time grows with the input's audio, `cpu_base + cpu_per_audio_minute * minutes`, up
/// to `cpu_max`; so a 3-hour recording converts on a slow machine while a plugin that
/// loops on a short file is still stopped soon. Memory and output are fixed caps.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitPolicy {
    pub cpu_base: Duration,
    pub cpu_per_audio_minute: Duration,
    /// The ceiling, also used when the input does not say how long it is.
    pub cpu_max: Duration,
    /// The longest any run may take in real time (`RunLimits::max_wall_time`).
    pub wall_max: Duration,
    pub max_memory_bytes: u64,
    pub max_output_bytes: u64,
    /// Longest input, in audio (a tenant limit; `None`: any length).
    pub max_input: Option<Duration>,
    /// Which limits a tenant's own value tightened, so a refusal says who can raise it.
    pub set_by_tenant: TenantSet,
}

/// The tenant whose limits tightened a [`LimitPolicy`], and which ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantSet {
    pub tenant: String,
    pub memory: bool,
    pub cpu_per_audio_minute: bool,
    pub output: bool,
    pub input: bool,
    /// The output cap is what is left of the tenant's `quota_bytes` (see
    /// [`LimitPolicy::cap_output_at_quota`]).
    pub quota: bool,
}

impl TenantSet {
    /// How the operator raises the tenant's limit called `limit`: the admin CLI call.
    pub fn raise(&self, limit: &str) -> String {
        debug_assert!(crate::tenant::Limit::named(limit).is_some(), "{limit}");
        let flag = crate::tenant::Limit::named(limit).map_or(limit, |l| l.flag);
        format!(
            "the tenant's limit; the operator can raise it with `tapedeck admin tenant limits {} --{flag} N`",
            self.tenant
        )
    }
}

impl Default for LimitPolicy {
    /// 30 s plus 5 s per minute of audio (the converter needs about 1 s per minute on a
    /// 2024 laptop core, so 5x leaves room for slow machines), at most one hour.
    fn default() -> Self {
        let run = RunLimits::default();
        Self {
            cpu_base: Duration::from_secs(30),
            cpu_per_audio_minute: Duration::from_secs(5),
            cpu_max: Duration::from_secs(3600),
            wall_max: run.max_wall_time,
            max_memory_bytes: run.max_memory_bytes,
            max_output_bytes: run.max_output_bytes,
            max_input: None,
            set_by_tenant: TenantSet::default(),
        }
    }
}

impl LimitPolicy {
    /// These (server) limits tightened by `tenant`'s effective limits: a tenant value only
    /// counts where it is lower.
    pub fn for_tenant(&self, tenant: &str, limits: &crate::tenant::TenantLimits) -> LimitPolicy {
        let mut out = self.clone();
        out.set_by_tenant.tenant = tenant.to_owned();
        if let Some(mib) = limits.max_memory_mib {
            let bytes = mib.saturating_mul(1 << 20);
            if bytes < out.max_memory_bytes {
                out.max_memory_bytes = bytes;
                out.set_by_tenant.memory = true;
            }
        }
        if let Some(mib) = limits.max_output_mib {
            let bytes = mib.saturating_mul(1 << 20);
            if bytes < out.max_output_bytes {
                out.max_output_bytes = bytes;
                out.set_by_tenant.output = true;
            }
        }
        if let Some(secs) = limits.cpu_per_audio_minute {
            let per_minute = Duration::from_secs(secs);
            if per_minute < out.cpu_per_audio_minute {
                out.cpu_per_audio_minute = per_minute;
                out.set_by_tenant.cpu_per_audio_minute = true;
            }
        }
        if let Some(minutes) = limits.max_input_minutes {
            let max = Duration::from_secs(minutes.saturating_mul(60));
            if out.max_input.is_none_or(|m| max < m) {
                out.max_input = Some(max);
                out.set_by_tenant.input = true;
            }
        }
        out
    }

    /// Caps the output at `room`, the bytes left in the tenant's storage quota, when that
    /// is tighter than the output limit: an MP3 the quota cannot hold stops being written
    /// as soon as it outgrows the room, instead of being stored past the quota.
    pub fn cap_output_at_quota(&mut self, room: u64) {
        if room < self.max_output_bytes {
            self.max_output_bytes = room;
            self.set_by_tenant.quota = true;
        }
    }

    /// The CPU time allowed for `audio` of input (`None`: unknown, the ceiling), in
    /// whole seconds (rounded up), the unit `RLIMIT_CPU` enforces.
    pub fn cpu_time_for(&self, audio: Option<Duration>) -> Duration {
        let sized = match audio {
            None => self.cpu_max,
            Some(audio) => {
                let minutes = audio.as_secs_f64() / 60.0;
                let sized =
                    self.cpu_base.as_secs_f64() + self.cpu_per_audio_minute.as_secs_f64() * minutes;
                Duration::try_from_secs_f64(sized.ceil())
                    .unwrap_or(self.cpu_max)
                    .min(self.cpu_max)
            }
        };
        sized.max(Duration::from_secs(1))
    }

    /// The limits of a run converting `audio` of input.
    pub fn limits_for(&self, audio: Option<Duration>) -> RunLimits {
        RunLimits {
            cpu_time: self.cpu_time_for(audio),
            max_memory_bytes: self.max_memory_bytes,
            max_output_bytes: self.max_output_bytes,
            max_wall_time: self.wall_max,
            ..RunLimits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn cpu_time_grows_with_the_audio_up_to_the_ceiling() {
        let policy = LimitPolicy {
            cpu_base: Duration::from_secs(10),
            cpu_per_audio_minute: Duration::from_secs(2),
            cpu_max: Duration::from_secs(100),
            ..LimitPolicy::default()
        };
        let minutes = |m: u64| Some(Duration::from_secs(m * 60));
        assert_eq!(policy.cpu_time_for(minutes(0)), Duration::from_secs(10));
        assert_eq!(policy.cpu_time_for(minutes(30)), Duration::from_secs(70));
        assert_eq!(
            policy.cpu_time_for(Some(Duration::from_secs(90))),
            Duration::from_secs(13)
        );
        assert_eq!(
            policy.cpu_time_for(Some(Duration::from_secs(100))),
            Duration::from_secs(14),
            "13.33 s rounds up"
        );
        assert_eq!(policy.cpu_time_for(minutes(180)), Duration::from_secs(100));
        assert_eq!(policy.cpu_time_for(None), Duration::from_secs(100));
        assert_eq!(
            policy.cpu_time_for(Some(Duration::MAX)),
            Duration::from_secs(100)
        );
        let limits = policy.limits_for(minutes(1));
        assert_eq!(limits.cpu_time, Duration::from_secs(12));
        assert_eq!(limits.max_memory_bytes, policy.max_memory_bytes);
    }

    #[test]
    fn the_output_cap_is_the_room_left_in_the_quota_when_tighter() {
        let mut policy = LimitPolicy::default();
        policy.cap_output_at_quota(u64::MAX);
        assert_eq!(
            policy.max_output_bytes,
            LimitPolicy::default().max_output_bytes
        );
        assert!(!policy.set_by_tenant.quota);
        policy.cap_output_at_quota(50_000);
        assert_eq!(policy.max_output_bytes, 50_000);
        assert!(policy.set_by_tenant.quota);
    }

    #[test]
    fn wall_clock_allows_twice_the_cpu_time_plus_slack() {
        let limits = RunLimits {
            cpu_time: Duration::from_secs(2),
            ..RunLimits::default()
        };
        assert_eq!(limits.wall_clock(), Duration::from_secs(14));
        let capped = RunLimits {
            cpu_time: Duration::from_secs(3030),
            max_wall_time: Duration::from_secs(1800),
            ..RunLimits::default()
        };
        assert_eq!(capped.wall_clock(), Duration::from_secs(1800));
    }
}
