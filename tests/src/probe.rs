//! ffprobe helpers for checking what the service produced.

use std::path::Path;
use std::process::Command;

/// Seconds of audio in `path` per ffprobe, and the codec of its first audio stream.
pub fn probe_audio(path: &Path) -> Option<(f64, String)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args(["stream=codec_name:format=duration", "-of", "default=nw=1"])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let codec = text
        .lines()
        .find_map(|l| l.strip_prefix("codec_name="))?
        .to_owned();
    let duration = text
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    Some((duration, codec))
}
