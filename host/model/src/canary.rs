//! Canary rollouts, the pure part: a canary's settings, which jobs it takes, and the
//! analysis comparing its runs with the stable component's. `tapedeck_store::canary`
//! keeps them in Redis and acts on the verdicts; the README documents the defaults.

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// What keeps a job on the same side of a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Sticky {
    /// All of a tenant's jobs run the same side.
    Tenant,
    /// All of a user's jobs run the same side.
    User,
    /// Each job on its own.
    #[default]
    Job,
}

impl Sticky {
    /// Its name in the API (`tenant`, `user`, `job`).
    pub fn as_str(self) -> &'static str {
        match self {
            Sticky::Tenant => "tenant",
            Sticky::User => "user",
            Sticky::Job => "job",
        }
    }
}

/// A canary, as the operator started it. Thresholds have the defaults of
/// [`CanarySettings::new`], documented in the README.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CanarySettings {
    pub stage: String,
    /// `None`: everyone's jobs (of tenants without their own component).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub tenant: Option<String>,
    pub digest: String,
    /// Share of new jobs that run the canary, 0 < percent ≤ 100.
    pub percent: f64,
    pub sticky: Sticky,
    /// Unix seconds.
    pub started_at: u64,
    /// Canary outcomes before any verdict.
    pub min_jobs: u32,
    /// Outcomes per arm the analysis looks at (the most recent).
    pub window: u32,
    /// The canary's plugin-failure share may exceed stable's by this much (0.10 = 10 points).
    pub max_failure_delta: f64,
    /// Same for invalid outputs.
    pub max_invalid_delta: f64,
    /// The canary's p95 run time may be this many times stable's...
    pub max_p95_ratio: f64,
    /// ...plus this many milliseconds.
    pub p95_slack_ms: u64,
    /// Promote by itself after this many canary outcomes with no breach.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub promote_after: Option<u32>,
    /// A canary run's deadline is this many times the stable component's p95 run time
    /// on inputs of similar length...
    #[serde(default = "default_deadline_factor")]
    pub deadline_factor: f64,
    /// ...plus this many milliseconds; passing it rolls the canary back at once.
    #[serde(default = "default_deadline_floor_ms")]
    pub deadline_floor_ms: u64,
}

fn default_deadline_factor() -> f64 {
    3.0
}

fn default_deadline_floor_ms() -> u64 {
    2000
}

impl CanarySettings {
    /// A canary with the default thresholds.
    pub fn new(stage: &str, tenant: Option<&str>, digest: &str, percent: f64) -> Self {
        Self {
            stage: stage.to_owned(),
            tenant: tenant.map(str::to_owned),
            digest: digest.to_owned(),
            percent,
            sticky: Sticky::Job,
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            min_jobs: 10,
            window: 50,
            max_failure_delta: 0.10,
            max_invalid_delta: 0.10,
            max_p95_ratio: 1.5,
            p95_slack_ms: 500,
            promote_after: None,
            deadline_factor: default_deadline_factor(),
            deadline_floor_ms: default_deadline_floor_ms(),
        }
    }

    /// The deadline of this canary's runs, given the stable component's recent runs.
    pub fn deadline(&self, stable: Vec<RunTime>) -> Deadline {
        Deadline {
            stable,
            factor: self.deadline_factor,
            floor_ms: self.deadline_floor_ms,
        }
    }

    /// The registry field of the canary's scope: `{stage}` or `{stage}:{tenant}`.
    pub fn scope(&self) -> String {
        scope(&self.stage, self.tenant.as_deref())
    }

    /// Whether a job with these keys runs the canary (stable for a given key and digest).
    pub fn takes(&self, tenant: &str, user: &str, job: &str) -> bool {
        let key = match self.sticky {
            Sticky::Tenant => tenant,
            Sticky::User => user,
            Sticky::Job => job,
        };
        (bucket(&self.digest, key) as f64) < self.percent * 100.0
    }

    /// Refuses settings that cannot work, saying which.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.percent > 0.0 && self.percent <= 100.0) {
            return Err("percent must be more than 0 and at most 100".into());
        }
        if self.min_jobs == 0 || self.window < self.min_jobs || self.window > 10_000 {
            return Err("min_jobs must be at least 1 and window between min_jobs and 10000".into());
        }
        let shares = [self.max_failure_delta, self.max_invalid_delta];
        if shares.iter().any(|d| !(0.0..=1.0).contains(d)) {
            return Err("max_failure_delta and max_invalid_delta are shares, 0 to 1".into());
        }
        if !(self.max_p95_ratio >= 1.0 && self.max_p95_ratio.is_finite()) {
            return Err("max_p95_ratio must be at least 1".into());
        }
        if !(1.0..=100.0).contains(&self.deadline_factor) {
            return Err("deadline_factor must be between 1 and 100".into());
        }
        if self.deadline_floor_ms > 3_600_000 {
            return Err("deadline_floor_ms must be at most an hour (3600000)".into());
        }
        Ok(())
    }
}

/// The registry field of a scope.
pub fn scope(stage: &str, tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("{stage}:{t}"),
        None => stage.to_owned(),
    }
}

/// 0..10000 from the digest and the sticky key: the same job, user or tenant lands in
/// the same bucket for a given canary, and different canaries sample different jobs.
pub fn bucket(digest: &str, key: &str) -> u32 {
    let h = sha2::Sha256::new()
        .chain_update(digest.as_bytes())
        .chain_update(b":")
        .chain_update(key.as_bytes())
        .finalize();
    u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % 10_000
}

/// One successful run of a component: how much audio it converted and how long it took.
/// The worker keeps each component's recent ones (`tapedeck_store::canary::run_times`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTime {
    pub input_ms: u64,
    pub run_ms: u64,
}

impl RunTime {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.input_ms, self.run_ms)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (input, run) = s.split_once(':')?;
        Some(Self {
            input_ms: input.parse().ok()?,
            run_ms: run.parse().ok()?,
        })
    }
}

/// How long a canary's run may take: `factor` times the p95 of the stable component's
/// recent runs on inputs of similar length (half to twice as long), plus `floor_ms`. A
/// canary that loops then costs one deadline, not a job's whole run limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Deadline {
    /// The stable component's recent runs.
    pub stable: Vec<RunTime>,
    pub factor: f64,
    pub floor_ms: u64,
}

/// Stable runs on similar inputs needed before a canary's run gets a deadline.
pub const DEADLINE_MIN_RUNS: usize = 3;

impl Deadline {
    /// The deadline of a run on `input_ms` of audio, and the stable p95 it comes from;
    /// `None` with fewer than [`DEADLINE_MIN_RUNS`] stable runs on similar inputs (the
    /// run keeps its ordinary limits).
    pub fn for_input(&self, input_ms: u64) -> Option<(std::time::Duration, u64)> {
        let mut similar: Vec<u64> = self
            .stable
            .iter()
            .filter(|r| r.input_ms >= input_ms / 2 && r.input_ms <= input_ms.saturating_mul(2))
            .map(|r| r.run_ms)
            .collect();
        if similar.len() < DEADLINE_MIN_RUNS {
            return None;
        }
        similar.sort_unstable();
        let n = similar.len();
        let p95 = similar[((n as f64 * 0.95).ceil() as usize).clamp(1, n) - 1];
        let ms = (p95 as f64 * self.factor) as u64 + self.floor_ms;
        Some((std::time::Duration::from_millis(ms), p95))
    }
}

/// How one run ended, for the analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    Ok,
    /// A plugin failure: trap, limit hit, internal error.
    Fail,
    /// The run succeeded but its output does not match its input.
    Invalid,
}

/// One run's outcome and wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub result: RunResult,
    pub ms: u64,
}

impl Outcome {
    pub fn encode(&self) -> String {
        let r = match self.result {
            RunResult::Ok => "ok",
            RunResult::Fail => "fail",
            RunResult::Invalid => "invalid",
        };
        format!("{r}:{}", self.ms)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (r, ms) = s.split_once(':')?;
        let result = match r {
            "ok" => RunResult::Ok,
            "fail" => RunResult::Fail,
            "invalid" => RunResult::Invalid,
            _ => return None,
        };
        Some(Self {
            result,
            ms: ms.parse().ok()?,
        })
    }
}

/// One arm over the window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ArmStats {
    pub jobs: u32,
    pub failures: u32,
    pub invalid: u32,
    /// p95 run time of the successful runs, ms (0 without any).
    pub p95_ms: u64,
}

impl ArmStats {
    pub fn of(outcomes: &[Outcome]) -> Self {
        let mut ms: Vec<u64> = outcomes
            .iter()
            .filter(|o| o.result == RunResult::Ok)
            .map(|o| o.ms)
            .collect();
        ms.sort_unstable();
        let p95_ms = match ms.len() {
            0 => 0,
            n => ms[((n as f64 * 0.95).ceil() as usize).clamp(1, n) - 1],
        };
        Self {
            jobs: outcomes.len() as u32,
            failures: outcomes
                .iter()
                .filter(|o| o.result == RunResult::Fail)
                .count() as u32,
            invalid: outcomes
                .iter()
                .filter(|o| o.result == RunResult::Invalid)
                .count() as u32,
            p95_ms,
        }
    }

    fn share(n: u32, of: u32) -> f64 {
        if of == 0 { 0.0 } else { n as f64 / of as f64 }
    }
}

/// What the analysis concludes.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Too few canary outcomes, or no breach yet.
    Continue,
    Rollback(String),
    Promote,
}

/// Compares the arms (`canary` and `stable`: most recent first, at most `window` each);
/// `canary_total` counts every canary outcome since the start.
pub fn analyze(
    s: &CanarySettings,
    canary: &[Outcome],
    stable: &[Outcome],
    canary_total: u64,
) -> Verdict {
    let w = s.window as usize;
    let (c, st) = (
        ArmStats::of(&canary[..canary.len().min(w)]),
        ArmStats::of(&stable[..stable.len().min(w)]),
    );
    if c.jobs < s.min_jobs {
        return Verdict::Continue;
    }
    let pct = |x: f64| format!("{:.0}%", x * 100.0);
    let (cf, sf) = (
        ArmStats::share(c.failures, c.jobs),
        ArmStats::share(st.failures, st.jobs),
    );
    if cf > sf + s.max_failure_delta {
        return Verdict::Rollback(format!(
            "plugin failures: {} of the canary's last {} runs ({}) vs {} of stable's {} ({}); \
             the canary may exceed stable by {} points (max_failure_delta)",
            c.failures,
            c.jobs,
            pct(cf),
            st.failures,
            st.jobs,
            pct(sf),
            s.max_failure_delta * 100.0
        ));
    }
    let (ci, si) = (
        ArmStats::share(c.invalid, c.jobs),
        ArmStats::share(st.invalid, st.jobs),
    );
    if ci > si + s.max_invalid_delta {
        return Verdict::Rollback(format!(
            "invalid outputs (decoded length unlike the input's): {} of the canary's last {} \
             runs ({}) vs {} of stable's {} ({}) (max_invalid_delta {})",
            c.invalid,
            c.jobs,
            pct(ci),
            st.invalid,
            st.jobs,
            pct(si),
            s.max_invalid_delta
        ));
    }
    // Run time is compared only with enough stable runs to have a p95 of its own.
    if st.jobs >= s.min_jobs && c.p95_ms > 0 && st.p95_ms > 0 {
        let allowed = (st.p95_ms as f64 * s.max_p95_ratio) as u64 + s.p95_slack_ms;
        if c.p95_ms > allowed {
            return Verdict::Rollback(format!(
                "p95 run time {} ms vs stable's {} ms, over {}x + {} ms (max_p95_ratio, \
                 p95_slack_ms)",
                c.p95_ms, st.p95_ms, s.max_p95_ratio, s.p95_slack_ms
            ));
        }
    }
    match s.promote_after {
        Some(n) if canary_total >= n as u64 => Verdict::Promote,
        _ => Verdict::Continue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_names_are_the_apis() {
        for sticky in [Sticky::Tenant, Sticky::User, Sticky::Job] {
            assert_eq!(serde_json::to_value(sticky).unwrap(), sticky.as_str());
        }
    }

    fn runs(ok: usize, fail: usize, ms: u64) -> Vec<Outcome> {
        let mut v = vec![
            Outcome {
                result: RunResult::Ok,
                ms
            };
            ok
        ];
        v.extend(vec![
            Outcome {
                result: RunResult::Fail,
                ms
            };
            fail
        ]);
        v
    }

    fn settings() -> CanarySettings {
        CanarySettings::new("converter", None, "abc", 25.0)
    }

    #[test]
    fn no_verdict_before_min_jobs() {
        let s = settings();
        assert_eq!(
            analyze(&s, &runs(0, 9, 10), &runs(50, 0, 10), 9),
            Verdict::Continue
        );
    }

    #[test]
    fn a_failing_canary_is_rolled_back_naming_the_figures() {
        let s = settings();
        match analyze(&s, &runs(7, 3, 10), &runs(50, 0, 10), 10) {
            Verdict::Rollback(why) => {
                assert!(
                    why.contains("3 of the canary's last 10 runs (30%)"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        // As bad as stable: no breach.
        assert_eq!(
            analyze(&s, &runs(7, 3, 10), &runs(35, 15, 10), 10),
            Verdict::Continue
        );
    }

    #[test]
    fn slow_canary_is_rolled_back_only_beyond_ratio_and_slack() {
        let s = settings();
        assert_eq!(
            analyze(&s, &runs(10, 0, 900), &runs(20, 0, 300), 10),
            Verdict::Continue,
            "900 <= 300 * 1.5 + 500"
        );
        assert!(matches!(
            analyze(&s, &runs(10, 0, 1000), &runs(20, 0, 300), 10),
            Verdict::Rollback(_)
        ));
    }

    #[test]
    fn clean_canary_is_promoted_when_asked() {
        let mut s = settings();
        assert_eq!(
            analyze(&s, &runs(30, 0, 10), &runs(30, 0, 10), 30),
            Verdict::Continue
        );
        s.promote_after = Some(30);
        assert_eq!(
            analyze(&s, &runs(30, 0, 10), &runs(30, 0, 10), 30),
            Verdict::Promote
        );
    }

    #[test]
    fn assignment_is_stable_and_near_the_share() {
        let s = settings();
        let taken = (0..10_000)
            .filter(|i| s.takes("t", "u", &format!("job-{i}")))
            .count();
        assert!((2300..2700).contains(&taken), "{taken}");
        assert_eq!(s.takes("t", "u", "job-1"), s.takes("t", "u", "job-1"));
        let by_tenant = CanarySettings {
            sticky: Sticky::Tenant,
            ..settings()
        };
        let first = by_tenant.takes("acme", "u1", "j1");
        assert!(
            (0..100).all(|i| by_tenant.takes("acme", &format!("u{i}"), &format!("j{i}")) == first)
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut s = settings();
        s.percent = 0.0;
        assert!(s.validate().is_err());
        s.percent = 100.0;
        assert!(s.validate().is_ok());
        s.window = 5;
        assert!(s.validate().is_err());
    }

    #[test]
    fn a_canary_deadline_comes_from_stable_runs_on_similar_inputs() {
        let run = |input_ms, run_ms| RunTime { input_ms, run_ms };
        let s = settings();
        // Ten 1-minute runs of ~400 ms and one of 900 ms; twenty 1-second runs of 50 ms.
        let mut stable: Vec<RunTime> = (0..10).map(|i| run(60_000, 400 + i)).collect();
        stable.push(run(70_000, 900));
        stable.extend((0..20).map(|_| run(1_000, 50)));
        let d = s.deadline(stable.clone());
        // p95 of the 11 similar runs is the slowest: 3 x 900 ms + 2 s.
        assert_eq!(
            d.for_input(60_000),
            Some((std::time::Duration::from_millis(4700), 900))
        );
        assert_eq!(
            d.for_input(1_500),
            Some((std::time::Duration::from_millis(2150), 50))
        );
        // Nothing of a similar length (10 minutes): ordinary limits.
        assert_eq!(d.for_input(600_000), None);
        // Too few similar runs.
        assert_eq!(s.deadline(stable[..2].to_vec()).for_input(60_000), None);
        assert_eq!(RunTime::decode(&run(5, 7).encode()), Some(run(5, 7)));
        assert_eq!(RunTime::decode("5"), None);
    }

    #[test]
    fn outcomes_round_trip() {
        for o in [
            Outcome {
                result: RunResult::Invalid,
                ms: 7,
            },
            Outcome {
                result: RunResult::Ok,
                ms: 0,
            },
        ] {
            assert_eq!(Outcome::decode(&o.encode()), Some(o));
        }
        assert_eq!(Outcome::decode("nope:1"), None);
    }
}
