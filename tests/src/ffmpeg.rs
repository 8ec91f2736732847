//! A converter that shells out to ffmpeg: lets the pipeline be tested end to end
//! independently of the WebAssembly converter.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use tapedeck::queue::JobOptions;
use tapedeck::worker::{ConvertFailure, ConvertSummary, Converter, ProgressFn};

pub struct FfmpegConverter;

/// Seconds of audio in `path` per ffprobe, and the codec of its first audio stream.
pub fn probe_audio(path: &Path) -> Option<(f64, String)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args(["stream=codec_name:format=duration", "-of", "default=nw=1"])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let codec = text.lines().find_map(|l| l.strip_prefix("codec_name="))?.to_owned();
    let duration = text
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    Some((duration, codec))
}

impl Converter for FfmpegConverter {
    fn convert(
        &self,
        input: &Path,
        output: &Path,
        options: &JobOptions,
        progress: ProgressFn<'_>,
    ) -> Result<ConvertSummary, ConvertFailure> {
        let (duration, codec) =
            probe_audio(input).ok_or_else(|| ConvertFailure::Permanent("no audio track".into()))?;
        if !["aac", "alac", "mp3", "flac"].contains(&codec.as_str()) && !codec.starts_with("pcm") {
            return Err(ConvertFailure::Permanent(format!("unsupported codec: {codec}")));
        }
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-v", "error", "-nostdin", "-y", "-i"]).arg(input).args(["-vn", "-c:a", "libmp3lame"]);
        match (options.bitrate, options.vbr) {
            (_, Some(q)) => cmd.args(["-q:a", &q.to_string()]),
            (b, None) => cmd.args(["-b:a", &format!("{}k", b.unwrap_or(192))]),
        };
        if let Some(rate) = options.sample_rate {
            cmd.args(["-ar", &rate.to_string()]);
        }
        if options.mono {
            cmd.args(["-ac", "1"]);
        }
        let mut child = cmd
            .args(["-progress", "pipe:1", "-f", "mp3"])
            .arg(output)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ConvertFailure::Retryable(format!("starting ffmpeg: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(us) = line.strip_prefix("out_time_us=").and_then(|v| v.parse::<f64>().ok())
                && duration > 0.0
            {
                progress((us / 1e6 / duration) as f32);
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|e| ConvertFailure::Retryable(format!("waiting for ffmpeg: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(ConvertFailure::Permanent(format!("corrupt input: {}", err.trim())));
        }
        let (out_duration, _) = probe_audio(output)
            .ok_or_else(|| ConvertFailure::Permanent("corrupt input: no audio decoded".into()))?;
        Ok(ConvertSummary {
            duration_ms: (out_duration * 1000.0) as u64,
        })
    }
}
