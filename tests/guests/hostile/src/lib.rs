//! Hostile guest: a converter component that misbehaves on request, so the host's limits
//! can be tested against real wasm.
//!
//! The behaviour is chosen by the first bytes of the input:
//! - `loop`: spins forever without touching memory (CPU limit).
//! - `idle`: sleeps forever, using no CPU at all (wall-clock limit, cancel, shutdown).
//! - `alloc`: allocates and touches memory without bound (memory limit).
//! - `write`: writes gigabytes to the sink, ignoring every error (output limit).
//! - `trap`: executes `unreachable`.
//! - `recurse`: recurses without bound (wasm call stack exhaustion).
//! - `probe`: writes, as the output, what the sandbox lets it see (env, args, files,
//!   clocks, network), so the host can assert that it sees nothing.
//! - an ISO-BMFF file whose movie header says how long it is: writes that long an MP3 of
//!   silence (valid frames, so the host's checks of an output pass) — except that it
//!   traps when the file ends with a `free` box holding `tapedeck-flaky:{n}` with
//!   `n % 10 < 3`: the flaky canary of the canary tests; and spins when that box holds
//!   `tapedeck-loop`: a converter that loops on some real inputs (none of the
//!   conformance suite's).
//! - anything else (`echo`): copies the input to the output and returns a summary.
//!
//! Tests that need a converter misbehaving on every input (the conformance check's own
//! inputs too) patch [`MODE`] in the component's bytes: `tapedeck-mode:spin!!` spins
//! whatever the input; `tapedeck-mode:large!` spins on inputs over 2 MiB (which the
//! conformance suite's large input catches, at publish too); `tapedeck-mode:panic!` panics
//! (Rust prints the message to stderr, then traps).
//!
//! Only a wasm32 component: compiled natively (`cargo build --workspace`) it is empty.
#![cfg(target_arch = "wasm32")]

use std::hint::black_box;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "converter",
});

use crate::exports::tapedeck::plugin::conversion::{ConvertError, Guest, Options, Summary};
use crate::tapedeck::plugin::io::{self, Sink, Source};
use crate::tapedeck::plugin::logging::{self, Level};
use crate::tapedeck::plugin::progress;

struct Hostile;

/// `tapedeck-mode:normal` as built; tests replace it in the component's data segment
/// (same length: the bytes stay a valid component under another digest).
static MODE: [u8; 20] = *b"tapedeck-mode:normal";

impl Guest for Hostile {
    fn convert(input: &Source, output: &Sink, _options: Options) -> Result<Summary, ConvertError> {
        // SAFETY: a read of an immutable static; volatile so that the bytes stay in the
        // data segment and are read there, where a test may have patched them.
        let mode = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(MODE)) };
        if mode.ends_with(b"spin!!") || (mode.ends_with(b"large!") && input.size() > 2 << 20) {
            spin()
        }
        if mode.ends_with(b"panic!") {
            panic!(
                "the hostile guest panics on request ({} bytes of input)",
                input.size()
            );
        }
        let head = input.read_at(0, 16).map_err(io_error)?;
        let starts = |word: &[u8]| head.starts_with(word);
        if starts(b"loop") {
            spin()
        } else if starts(b"idle") {
            idle()
        } else if starts(b"alloc") {
            hog_memory()
        } else if starts(b"write") {
            flood(output)
        } else if starts(b"trap") {
            core::arch::wasm32::unreachable()
        } else if starts(b"recurse") {
            let depth = recurse(black_box(0));
            Err(ConvertError::CorruptInput(format!(
                "recursion returned at {depth}"
            )))
        } else if starts(b"probe") {
            let report = probe();
            output.write(report.as_bytes()).map_err(io_error)?;
            Ok(summary(report.len() as u64))
        } else if let Some(ms) = movie_ms(input) {
            if flaky_trap(input) {
                core::arch::wasm32::unreachable()
            }
            if marker(input).is_some_and(|m| m.contains("tapedeck-loop")) {
                spin()
            }
            silence(output, ms)
        } else {
            echo(input, output)
        }
    }
}

/// Reads `len` bytes at `offset`, if the source has them.
fn read(input: &Source, offset: u64, len: u32) -> Option<Vec<u8>> {
    let bytes = input.read_at(offset, len).ok()?;
    (bytes.len() == len as usize).then_some(bytes)
}

fn be32(b: &[u8]) -> u64 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64
}

/// The box of type `kind` among the boxes in `start..end`: (payload start, end).
fn find_box(input: &Source, kind: &[u8], start: u64, end: u64) -> Option<(u64, u64)> {
    let mut offset = start;
    for _ in 0..64 {
        if offset + 8 > end {
            return None;
        }
        let head = read(input, offset, 8)?;
        let size = be32(&head);
        if size < 8 {
            return None;
        }
        if &head[4..8] == kind {
            return Some((offset + 8, offset + size));
        }
        offset += size;
    }
    None
}

/// The movie's length from `moov/mvhd` (version 0 only), in milliseconds.
fn movie_ms(input: &Source) -> Option<u64> {
    let (moov, moov_end) = find_box(input, b"moov", 0, input.size())?;
    let (mvhd, _) = find_box(input, b"mvhd", moov, moov_end)?;
    let rec = read(input, mvhd, 20)?;
    let (timescale, duration) = (be32(&rec[12..16]), be32(&rec[16..20]));
    (rec[0] == 0 && timescale > 0 && duration > 0).then(|| duration * 1000 / timescale)
}

/// The last 64 bytes of the input, as text: where the tests put their markers.
fn marker(input: &Source) -> Option<String> {
    let size = input.size();
    let tail = read(input, size.saturating_sub(64), size.min(64) as u32)?;
    Some(String::from_utf8_lossy(&tail).into_owned())
}

/// Whether the file ends with the flaky marker that asks for a trap.
fn flaky_trap(input: &Source) -> bool {
    let Some(text) = marker(input) else {
        return false;
    };
    text.rsplit_once("tapedeck-flaky:")
        .and_then(|(_, n)| n.trim_end_matches('\0').trim().parse::<u64>().ok())
        .is_some_and(|n| n % 10 < 3)
}

/// `ms` of silence as MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz, stereo; all-zero
/// side information decodes to silence).
fn silence(output: &Sink, ms: u64) -> Result<Summary, ConvertError> {
    let frames = (ms * 44_100).div_ceil(1000 * 1152);
    let mut frame = vec![0u8; 417];
    frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x00]);
    let mut block = Vec::with_capacity(417 * 64);
    let mut written = 0u64;
    for i in 0..frames {
        block.extend_from_slice(&frame);
        if block.len() >= 417 * 64 || i + 1 == frames {
            output.write(&block).map_err(io_error)?;
            written += block.len() as u64;
            block.clear();
            progress::report((i + 1) as f32 / frames as f32);
        }
    }
    Ok(Summary {
        input_codec: "silence".into(),
        output_frames: frames * 1152,
        duration_ms: frames * 1152 * 1000 / 44_100,
        output_bytes: written,
        ..summary(written)
    })
}

fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        // black_box keeps the otherwise side-effect-free loop in the compiled code.
        counter = black_box(counter.wrapping_add(1));
    }
}

fn idle() -> ! {
    loop {
        // A WASI monotonic-clock subscription: the host blocks the guest's thread on a
        // real timer, so the runner process sits at zero CPU.
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn hog_memory() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page so the memory is really used, not just reserved.
        blocks.push(vec![0xA5; 1 << 20]);
        black_box(&blocks);
    }
}

fn flood(output: &Sink) -> ! {
    let block = vec![0x55u8; io::max_read() as usize];
    loop {
        // A hostile guest ignores the limit-exceeded error and carries on.
        let _ = black_box(output.write(&block));
    }
}

/// Recurses without bound. The depth lives in wasm locals, not in the shadow stack in
/// linear memory, so it is the wasm call stack that overflows.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return depth;
    }
    recurse(depth + 1).wrapping_add(black_box(1))
}

fn echo(input: &Source, output: &Sink) -> Result<Summary, ConvertError> {
    let size = input.size();
    let chunk = io::max_read().min(64 * 1024);
    let mut offset = 0u64;
    logging::log(Level::Info, &format!("echoing {size} bytes"));
    while offset < size {
        let bytes = input.read_at(offset, chunk).map_err(io_error)?;
        if bytes.is_empty() {
            break;
        }
        output.write(&bytes).map_err(io_error)?;
        offset += bytes.len() as u64;
        progress::report(offset as f32 / size as f32);
    }
    Ok(summary(offset))
}

/// Describes what this component can observe of its environment, one fact per line.
fn probe() -> String {
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let args: Vec<String> = std::env::args().collect();
    let root = std::fs::read_dir("/")
        .map(|d| d.count())
        .map_err(|e| e.kind());
    let passwd = std::fs::read("/etc/passwd")
        .map(|b| b.len())
        .map_err(|e| e.kind());
    let cwd = std::env::current_dir().map_err(|e| e.kind());
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos());
    let start = Instant::now();
    black_box(spin_a_little());
    let elapsed = start.elapsed().as_nanos();
    let tcp = std::net::TcpStream::connect("127.0.0.1:80")
        .map(|_| ())
        .map_err(|e| e.kind());
    let udp = std::net::UdpSocket::bind("0.0.0.0:0")
        .map(|_| ())
        .map_err(|e| e.kind());
    eprintln!("probe: hello from the guest's stderr");
    format!(
        "env={env:?}\nargs={args:?}\nroot={root:?}\npasswd={passwd:?}\ncwd={cwd:?}\n\
         wall={wall:?}\nelapsed={elapsed}\ntcp={tcp:?}\nudp={udp:?}\n"
    )
}

fn spin_a_little() -> u64 {
    (0..1_000_000u64).fold(0, |acc, i| black_box(acc ^ i))
}

fn summary(output_bytes: u64) -> Summary {
    Summary {
        input_codec: "echo".into(),
        input_sample_rate: 44_100,
        input_channels: 2,
        output_sample_rate: 44_100,
        output_channels: 2,
        output_frames: 0,
        duration_ms: 0,
        output_bytes,
        bitrate_kbps: 128,
    }
}

fn io_error(error: io::IoError) -> ConvertError {
    ConvertError::Io(format!("{error:?}"))
}

export!(Hostile);
