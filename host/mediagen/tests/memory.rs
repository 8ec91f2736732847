//! Hours of audio are written in bounded memory: the heap's high-water mark while an
//! hour is written stays at a few hundred KiB whatever the output size. One test in this
//! file: the counting allocator sees the whole process.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use tapedeck_mediagen::{Damage, Layout, Signal, Spec, write};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes live.
struct Counting;

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract;
// the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` are passed on as they are.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Counts what is written and forgets it.
struct Discard(u64);

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Heap high-water mark above what was live before, while `spec` is written.
fn peak_while_writing(spec: &Spec) -> (usize, u64) {
    let mut out = Discard(0);
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let written = write(spec, Damage::None, &mut out).unwrap();
    assert_eq!(written.bytes, out.0);
    (PEAK.load(Ordering::Relaxed) - before, out.0)
}

#[test]
fn an_hour_is_written_in_bounded_memory() {
    const LIMIT: usize = 256 << 10;
    let hour = 3_600_000;
    // An hour of 8 kHz mono sine, moov first: 57.6 MB, 7032 chunk offsets.
    let mono = Spec {
        sample_rate: 8_000,
        channels: 1,
        duration_ms: hour,
        layout: Layout::MoovFirst,
        signal: Signal::Sine {
            hz: 440.0,
            amplitude: 0.5,
        },
    };
    // An hour of 96 kHz 5.1 (silence, to be quick), fragmented and moov last: 4.1 GB.
    let surround = Spec {
        sample_rate: 96_000,
        channels: 6,
        signal: Signal::Silence,
        ..mono
    };
    let cases = [
        mono,
        Spec {
            layout: Layout::Fragmented,
            ..surround
        },
        Spec {
            layout: Layout::MoovLast,
            ..surround
        },
    ];
    for spec in cases {
        let (peak, bytes) = peak_while_writing(&spec);
        println!("{spec:?}: {bytes} bytes written, heap peak {peak} bytes");
        assert!(bytes > 50_000_000);
        assert!(
            peak < LIMIT,
            "{spec:?}: {peak} bytes of heap for a {bytes}-byte file"
        );
    }
}
