//! The worker's [`Converter`] backed by the WebAssembly converter component, run through
//! the plugin runtime (`crate::registry`) in a child process per conversion, with limits
//! sized to each input by the service's [`LimitPolicy`].

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use tapedeck_model::convert::{ConvertFailure, ConvertJob, ConvertSummary, Converter, ProgressFn};
use tapedeck_model::job::JobOptions;

use crate::{
    ConvertError, ConvertOptions, ConverterPlugin, LimitPolicy, Mode, RunError, RunLimits,
};

/// The fewest bytes a second of audio takes in any file the converter reads, with a wide
/// margin: the leanest real inputs (AAC at 8 kHz, even of silence, with its sample table;
/// ALAC, FLAC and PCM are far above) need well over 100 bytes per second, and the
/// truncated recordings in the test media over 170. A header that declares more audio
/// than `size / MIN_BYTES_PER_AUDIO_SECOND` seconds is not believed: the file is refused
/// before any run is sized from it (a 152-byte file cannot hold 10 hours).
pub const MIN_BYTES_PER_AUDIO_SECOND: u64 = 16;

/// A loaded converter component as the worker's [`Converter`]: each run's limits are
/// sized to its input by the job's [`LimitPolicy`].
pub struct ComponentConverter {
    plugin: Arc<ConverterPlugin>,
}

impl ComponentConverter {
    pub fn new(plugin: Arc<ConverterPlugin>) -> Self {
        Self { plugin }
    }
}

/// The plugin's options for a job's options.
pub fn convert_options(options: &JobOptions) -> ConvertOptions {
    let mode = match (options.vbr, options.bitrate) {
        (Some(quality), _) => Mode::Vbr(quality),
        (None, Some(kbps)) => Mode::Cbr(kbps),
        (None, None) => ConvertOptions::default().mode,
    };
    ConvertOptions {
        mode,
        sample_rate: options.sample_rate,
        mono: options.mono,
        trim: None,
    }
}

/// How long an input's audio is, as far as the host can tell before converting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AudioLength {
    /// What the container's header says.
    Declared(Duration),
    /// No usable header: an upper bound from the file's size, as if the audio were
    /// coded at 8 kbit/s, below any codec and bitrate the converter supports.
    AtMost(Duration),
}

impl AudioLength {
    /// Refuses a declared length the file's `size` cannot carry (see
    /// [`MIN_BYTES_PER_AUDIO_SECOND`]), with the reason; an estimate always fits.
    pub fn believable(self, size: u64) -> Result<Self, String> {
        let most = Duration::from_secs(size / MIN_BYTES_PER_AUDIO_SECOND);
        match self {
            AudioLength::Declared(d) if d > most => Err(format!(
                "the file declares {:.1} minutes of audio but is only {size} bytes long, room \
                 for at most {} s at {MIN_BYTES_PER_AUDIO_SECOND} bytes per second (less than \
                 any audio codec needs): its header is wrong, so it is not converted",
                d.as_secs_f64() / 60.0,
                most.as_secs()
            )),
            other => Ok(other),
        }
    }

    /// The length of `input`.
    pub fn of(input: &File) -> Self {
        match crate::media::iso_bmff_duration(input) {
            Some(d) => AudioLength::Declared(d),
            None => {
                let bytes = input.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                AudioLength::AtMost(Duration::from_secs(bytes / 1000))
            }
        }
    }

    fn duration(self) -> Duration {
        match self {
            AudioLength::Declared(d) | AudioLength::AtMost(d) => d,
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", (d.as_secs_f64() * 10.0).round() / 10.0)
}

/// The converter's own verdicts on the input are final, and so is a limit: the same
/// input hits it again on every attempt, so it fails at once, saying which limit, its
/// value, and which setting raises it. Traps and I/O may pass on another attempt (a
/// flaky disk, a worker killed mid-run), so they are retried.
pub fn classify(
    error: RunError,
    policy: &LimitPolicy,
    limits: &RunLimits,
    audio: AudioLength,
) -> ConvertFailure {
    let raise = |flags: &str| format!("{error}; the operator can raise it with {flags}");
    let tenant = &policy.set_by_tenant;
    match &error {
        RunError::Convert(ConvertError::Io(_)) => ConvertFailure::Retryable(error.to_string()),
        RunError::Convert(_) => ConvertFailure::Refused(error.to_string()),
        RunError::CpuLimit { .. } | RunError::WallClockLimit { .. } => {
            let minutes = audio.duration().as_secs_f64() / 60.0;
            let length = match audio {
                AudioLength::Declared(_) => format!("{minutes:.1} minutes"),
                AudioLength::AtMost(_) => format!(
                    "at most {minutes:.1} minutes, estimated from the file size since the \
                     file does not say"
                ),
            };
            let sizing = if tenant.cpu_per_audio_minute && limits.cpu_time < policy.cpu_max {
                format!(
                    "{} + {} per minute of audio for {length}: {}",
                    secs(policy.cpu_base),
                    secs(policy.cpu_per_audio_minute),
                    tenant.raise("cpu_per_audio_minute")
                )
            } else if limits.cpu_time >= policy.cpu_max {
                format!(
                    "the ceiling of {} for {length}; the operator can raise it with \
                     --run-cpu-max-secs",
                    secs(policy.cpu_max)
                )
            } else {
                format!(
                    "{} + {} per minute of audio for {length}, at most {}; the operator can \
                     raise it with --run-cpu-base-secs / --run-cpu-secs-per-minute",
                    secs(policy.cpu_base),
                    secs(policy.cpu_per_audio_minute),
                    secs(policy.cpu_max)
                )
            };
            let what = match error {
                RunError::WallClockLimit { limit } if limit >= limits.max_wall_time => format!(
                    "{error}: the converter was stuck, not computing (the ceiling of every \
                     run; the operator can raise it with --run-wall-max-secs)"
                ),
                RunError::WallClockLimit { .. } => format!(
                    "{error} (twice the CPU time limit of {} plus 10 s: the converter was \
                     stuck, not computing)",
                    secs(limits.cpu_time)
                ),
                _ => error.to_string(),
            };
            if matches!(error, RunError::WallClockLimit { limit } if limit >= limits.max_wall_time)
            {
                return ConvertFailure::Permanent(what);
            }
            ConvertFailure::Permanent(format!("{what} ({sizing})"))
        }
        RunError::MemoryLimit { .. } if tenant.memory => {
            ConvertFailure::Permanent(format!("{error} ({})", tenant.raise("max_memory_mib")))
        }
        RunError::OutputLimit { limit } if tenant.quota => ConvertFailure::Permanent(format!(
            "limit_exceeded: quota_bytes: the MP3 outgrew the {limit} bytes left in the \
             tenant's storage quota and was not kept; delete jobs to make room, or the \
             operator can raise quota_bytes"
        )),
        RunError::OutputLimit { .. } if tenant.output => {
            ConvertFailure::Permanent(format!("{error} ({})", tenant.raise("max_output_mib")))
        }
        RunError::MemoryLimit { .. } => ConvertFailure::Permanent(raise("--run-max-memory-mib")),
        RunError::OutputLimit { .. } => ConvertFailure::Permanent(raise("--run-max-output-mib")),
        RunError::TableLimit { .. } | RunError::StackOverflow => ConvertFailure::Permanent(
            format!("{error} (a limit no setting changes: the converter is faulty)"),
        ),
        _ => ConvertFailure::Retryable(error.to_string()),
    }
}

impl Converter for ComponentConverter {
    fn convert(
        &self,
        job: &ConvertJob<'_>,
        progress: ProgressFn<'_>,
    ) -> Result<ConvertSummary, ConvertFailure> {
        let io = |what: &str, e: std::io::Error| ConvertFailure::Retryable(format!("{what}: {e}"));
        let input = File::open(job.input).map_err(|e| io("opening the input", e))?;
        let output = File::create(job.output).map_err(|e| io("creating the output", e))?;
        let size = input
            .metadata()
            .map_err(|e| io("reading the input", e))?
            .len();
        let audio = AudioLength::of(&input)
            .believable(size)
            .map_err(ConvertFailure::Refused)?;
        if let (AudioLength::Declared(length), Some(max)) = (audio, job.limits.max_input)
            && length > max
        {
            return Err(ConvertFailure::Permanent(format!(
                "input length limit exceeded: the file holds {:.1} minutes of audio, over \
                 the limit of {} minutes (max_input_minutes: {})",
                length.as_secs_f64() / 60.0,
                max.as_secs() / 60,
                job.limits.set_by_tenant.raise("max_input_minutes")
            )));
        }
        let mut limits = job.limits.limits_for(Some(audio.duration()));
        // A canary's deadline, where the stable component has run on inputs this long.
        let deadline = match (job.deadline, audio) {
            (Some(d), AudioLength::Declared(length)) => d
                .for_input(length.as_millis() as u64)
                .map(|(time, p95)| (d, time, p95)),
            _ => None,
        };
        if let Some((_, time, _)) = deadline {
            limits.max_wall_time = limits.max_wall_time.min(time);
            limits.cpu_time = limits.cpu_time.min(time.max(Duration::from_secs(1)));
        }
        tracing::debug!(job = job.job_id, ?audio, cpu_time = ?limits.cpu_time, ?deadline, "conversion limits");
        let (result, usage) = self.plugin.convert_cancellable(
            &input,
            &output,
            &convert_options(job.options),
            &limits,
            &mut |p| progress(p),
            job.cancel,
        );
        if let Some(cpu) = usage.cpu_time {
            job.cpu_ms
                .fetch_add(cpu.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let summary = result.map_err(|e| match (e, deadline) {
            (RunError::CpuLimit { .. } | RunError::WallClockLimit { .. }, Some((d, time, p95))) => {
                ConvertFailure::TimedOut(format!(
                    "deadline of {:.1} s passed ({} x the stable converter's p95 of {p95} ms on \
                 inputs of similar length + {} ms: deadline_factor, deadline_floor_ms)",
                    time.as_secs_f64(),
                    d.factor,
                    d.floor_ms
                ))
            }
            (e, _) => classify(e, job.limits, &limits, audio),
        })?;
        let decoded = File::open(job.output)
            .ok()
            .and_then(|f| crate::media::mp3_duration(&f));
        let decoded_ms = decoded.map(|d| d.as_millis() as u64);
        Ok(ConvertSummary {
            // The guest's figure (exact: it knows the encoder's delay and padding) when
            // the host's frame count agrees with it, else the host's: never trust the
            // guest's word alone.
            duration_ms: match decoded {
                Some(d)
                    if !crate::media::lengths_agree(
                        d,
                        std::time::Duration::from_millis(summary.duration_ms),
                    ) =>
                {
                    d.as_millis() as u64
                }
                _ => summary.duration_ms,
            },
            bitrate_kbps: summary.bitrate_kbps,
            input_ms: match audio {
                AudioLength::Declared(d) => Some(d.as_millis() as u64),
                AudioLength::AtMost(_) => None,
            },
            decoded_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LimitPolicy {
        LimitPolicy {
            cpu_base: Duration::from_secs(30),
            cpu_per_audio_minute: Duration::from_secs(5),
            cpu_max: Duration::from_secs(3600),
            ..LimitPolicy::default()
        }
    }

    fn permanent(f: ConvertFailure) -> String {
        match f {
            ConvertFailure::Permanent(why) => why,
            other => panic!("retryable: {other:?}"),
        }
    }

    #[test]
    fn limits_fail_at_once_naming_the_limit_and_the_setting() {
        let p = policy();
        let audio = AudioLength::Declared(Duration::from_secs(13 * 60));
        let limits = p.limits_for(Some(audio.duration()));
        let cpu = RunError::CpuLimit {
            limit: limits.cpu_time,
        };
        let why = permanent(classify(cpu, &p, &limits, audio));
        assert!(why.starts_with("CPU time limit of 95 s exceeded"), "{why}");
        assert!(
            why.contains("30 s + 5 s per minute of audio for 13.0 minutes"),
            "{why}"
        );
        assert!(why.contains("--run-cpu-secs-per-minute"), "{why}");
        assert!(!why.contains("account"), "{why}");

        let huge = AudioLength::AtMost(Duration::from_secs(100_000));
        let capped = p.limits_for(Some(huge.duration()));
        let why = permanent(classify(
            RunError::CpuLimit {
                limit: capped.cpu_time,
            },
            &p,
            &capped,
            huge,
        ));
        assert!(why.contains("--run-cpu-max-secs"), "{why}");
        assert!(why.contains("estimated from the file size"), "{why}");

        let why = permanent(classify(
            RunError::MemoryLimit { limit: 64 << 20 },
            &p,
            &limits,
            audio,
        ));
        assert_eq!(
            why,
            "memory limit of 64 MiB exceeded; the operator can raise it with --run-max-memory-mib"
        );
        let why = permanent(classify(
            RunError::OutputLimit { limit: 512 << 20 },
            &p,
            &limits,
            audio,
        ));
        assert!(why.contains("--run-max-output-mib"), "{why}");
    }

    #[test]
    fn a_declared_length_must_fit_in_the_file() {
        let hours = |h: u64| AudioLength::Declared(Duration::from_secs(h * 3600));
        let why = hours(10).believable(152).unwrap_err();
        assert!(
            why.contains("declares 600.0 minutes of audio but is only 152 bytes long"),
            "{why}"
        );
        // A real recording: an hour of 8 kHz AAC at 16 kbit/s is 7.2 MB.
        assert_eq!(hours(1).believable(7_200_000), Ok(hours(1)));
        // An hour at the floor fits; a second more does not.
        let floor = 3600 * MIN_BYTES_PER_AUDIO_SECOND;
        assert_eq!(hours(1).believable(floor), Ok(hours(1)));
        assert!(
            hours(1)
                .believable(floor - MIN_BYTES_PER_AUDIO_SECOND)
                .is_err()
        );
        // An estimate is the file's own size: always believed.
        let estimate = AudioLength::AtMost(Duration::from_secs(100));
        assert_eq!(estimate.believable(0), Ok(estimate));
    }

    #[test]
    fn traps_and_io_are_retried() {
        let p = policy();
        let limits = p.limits_for(None);
        let audio = AudioLength::Declared(Duration::ZERO);
        for e in [
            RunError::Trap {
                message: "unreachable".into(),
            },
            RunError::Io {
                message: "disk".into(),
            },
            RunError::Convert(ConvertError::Io("sink".into())),
        ] {
            assert!(matches!(
                classify(e, &p, &limits, audio),
                ConvertFailure::Retryable(_)
            ));
        }
        assert!(matches!(
            classify(
                RunError::Convert(ConvertError::NoAudioTrack),
                &p,
                &limits,
                audio
            ),
            ConvertFailure::Refused(_)
        ));
    }
}
