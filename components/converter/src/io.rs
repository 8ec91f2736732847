//! Byte I/O seams of the converter: a random-access source and a mostly-append sink.
//!
//! Contact points: `host_glue.rs` implements both traits over the WIT `source`/`sink`
//! resources; native callers (tests, the bench) use [`FileSource`], [`SliceSource`] and
//! [`VecSink`]. The pipeline only ever sees the traits, so the same code runs in both.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a read or write on a host-provided stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The sink refused to grow past the output limit (the limit, in bytes).
    #[error("output limit of {0} bytes exceeded")]
    LimitExceeded(u64),
    /// Any other failure of the underlying storage.
    #[error("{0}")]
    Failed(String),
}

/// Random-access, read-only input.
///
/// `Send + Sync` because symphonia's `MediaSource` requires it; the converter itself
/// is single-threaded.
pub trait ReadAt: Send + Sync {
    /// Total length in bytes.
    fn size(&self) -> u64;
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the input,
    /// 0 at or past the end.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, IoError>;
}

/// Output written front to back, whose already-written bytes may be overwritten.
pub trait WriteSink {
    /// Appends `bytes`.
    fn write(&mut self, bytes: &[u8]) -> Result<(), IoError>;
    /// Overwrites already-written bytes at `offset`; never extends the output.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), IoError>;
}

/// A whole input held in memory.
pub struct SliceSource<'a> {
    /// The input bytes.
    pub bytes: &'a [u8],
}

impl ReadAt for SliceSource<'_> {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, IoError> {
        let len = self.bytes.len() as u64;
        if offset >= len {
            return Ok(0);
        }
        let start = offset as usize;
        let n = buf.len().min(self.bytes.len() - start);
        buf[..n].copy_from_slice(&self.bytes[start..start + n]);
        Ok(n)
    }
}

/// A file on the local file system (native use only).
pub struct FileSource {
    /// The open file.
    file: std::fs::File,
    /// Its length, taken once at open.
    len: u64,
}

impl FileSource {
    /// Opens `path` for reading.
    pub fn open(path: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileSource { file, len })
    }
}

impl ReadAt for FileSource {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, IoError> {
        let fail = |e: std::io::Error| IoError::Failed(e.to_string());
        self.file.seek(SeekFrom::Start(offset)).map_err(fail)?;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(e)),
            }
        }
        Ok(done)
    }
}

/// An in-memory output, with an optional byte limit (to exercise `output-too-large`).
#[derive(Default)]
pub struct VecSink {
    /// Everything written so far.
    pub bytes: Vec<u8>,
    /// Writes that would take `bytes` past this length fail with `LimitExceeded`.
    pub limit: Option<u64>,
}

impl WriteSink for VecSink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        if let Some(limit) = self.limit
            && (self.bytes.len() + bytes.len()) as u64 > limit
        {
            return Err(IoError::LimitExceeded(limit));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), IoError> {
        let start =
            usize::try_from(offset).map_err(|_| IoError::Failed("offset too large".into()))?;
        let end = start
            .checked_add(bytes.len())
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| IoError::Failed("write-at past the end".into()))?;
        self.bytes[start..end].copy_from_slice(bytes);
        Ok(())
    }
}

/// Serves small reads from one window of the source, so a chatty reader (symphonia
/// asks for a few KiB at a time) turns into few large source reads, and memory stays
/// bounded by the window whatever the input length.
pub(crate) struct WindowedReader<'a> {
    /// The underlying source.
    source: &'a mut dyn ReadAt,
    /// Cached bytes starting at `window_start`.
    window: Vec<u8>,
    /// Offset of `window[0]` in the source.
    window_start: u64,
    /// Size the window is refilled to.
    window_cap: usize,
    /// Highest offset read so far, shared with the progress reporter.
    high_water: Arc<AtomicU64>,
}

impl<'a> WindowedReader<'a> {
    pub(crate) fn new(source: &'a mut dyn ReadAt, window_cap: usize) -> Self {
        WindowedReader {
            source,
            window: Vec::with_capacity(window_cap),
            window_start: 0,
            window_cap,
            high_water: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.source.size()
    }

    pub(crate) fn high_water(&self) -> Arc<AtomicU64> {
        self.high_water.clone()
    }

    /// Reads up to `buf.len()` bytes at `offset`.
    pub(crate) fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, IoError> {
        let end_of_window = self.window_start + self.window.len() as u64;
        if offset < self.window_start || offset >= end_of_window {
            if buf.len() >= self.window_cap {
                // Large reads bypass the window: no point copying twice.
                let n = self.source.read_at(offset, buf)?;
                self.note(offset + n as u64);
                return Ok(n);
            }
            self.window.resize(self.window_cap, 0);
            let n = self.source.read_at(offset, &mut self.window)?;
            self.window.truncate(n);
            self.window_start = offset;
            self.note(offset + n as u64);
            if n == 0 {
                return Ok(0);
            }
        }
        let at = (offset - self.window_start) as usize;
        let n = buf.len().min(self.window.len() - at);
        buf[..n].copy_from_slice(&self.window[at..at + n]);
        Ok(n)
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `None` at end of input.
    pub(crate) fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<bool, IoError> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(offset + done as u64, &mut buf[done..])?;
            if n == 0 {
                return Ok(false);
            }
            done += n;
        }
        Ok(true)
    }

    fn note(&self, offset: u64) {
        self.high_water.fetch_max(offset, Ordering::Relaxed);
    }
}

/// Adapts a [`WindowedReader`] to `Read + Seek` for symphonia's `MediaSourceStream`.
pub(crate) struct MediaSourceAdapter<'a> {
    /// Where the bytes come from.
    reader: WindowedReader<'a>,
    /// Current stream position.
    pos: u64,
    /// The first host error met, kept so it can be reported as `io` rather than as
    /// the generic demuxer error symphonia turns it into.
    pub(crate) failure: Arc<std::sync::Mutex<Option<IoError>>>,
}

impl<'a> MediaSourceAdapter<'a> {
    pub(crate) fn new(reader: WindowedReader<'a>) -> Self {
        MediaSourceAdapter {
            reader,
            pos: 0,
            failure: Arc::default(),
        }
    }
}

impl Read for MediaSourceAdapter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.reader.read_at(self.pos, buf) {
            Ok(n) => {
                self.pos += n as u64;
                Ok(n)
            }
            Err(e) => {
                let msg = e.to_string();
                if let Ok(mut slot) = self.failure.lock() {
                    slot.get_or_insert(e);
                }
                Err(std::io::Error::other(msg))
            }
        }
    }
}

impl Seek for MediaSourceAdapter<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let size = self.reader.size() as i128;
        let target = match to {
            SeekFrom::Start(o) => o as i128,
            SeekFrom::End(d) => size + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if target < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        self.pos = target.min(u64::MAX as i128) as u64;
        Ok(self.pos)
    }
}

impl symphonia::core::io::MediaSource for MediaSourceAdapter<'_> {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.reader.size())
    }
}

/// Batches appends into fixed-size writes, counts bytes, and defers everything until
/// the first write so a run that fails before producing audio leaves the sink empty.
pub(crate) struct BatchedSink<'a> {
    /// The real output.
    sink: &'a mut dyn WriteSink,
    /// Bytes not yet handed to `sink`.
    pending: Vec<u8>,
    /// Flush threshold for `pending`.
    batch: usize,
    /// Bytes handed to `sink` so far.
    flushed: u64,
}

impl<'a> BatchedSink<'a> {
    pub(crate) fn new(sink: &'a mut dyn WriteSink, batch: usize) -> Self {
        BatchedSink {
            sink,
            pending: Vec::with_capacity(batch),
            batch,
            flushed: 0,
        }
    }

    /// Total bytes written, pending included.
    pub(crate) fn len(&self) -> u64 {
        self.flushed + self.pending.len() as u64
    }

    pub(crate) fn write(&mut self, mut bytes: &[u8]) -> Result<(), IoError> {
        while !bytes.is_empty() {
            let room = self.batch - self.pending.len();
            let n = room.min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.pending.len() == self.batch {
                self.flush()?;
            }
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<(), IoError> {
        if !self.pending.is_empty() {
            self.sink.write(&self.pending)?;
            self.flushed += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    /// Overwrites bytes at `offset`; call after [`flush`](Self::flush).
    pub(crate) fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), IoError> {
        self.sink.write_at(offset, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_reader_serves_reads_across_window_edges() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut src = SliceSource { bytes: &data };
        let mut r = WindowedReader::new(&mut src, 1024);
        let mut buf = vec![0u8; 3000];
        assert!(r.read_exact_at(900, &mut buf).unwrap());
        assert_eq!(&buf[..], &data[900..3900]);
        let mut tail = [0u8; 10];
        assert_eq!(r.read_at(9_995, &mut tail).unwrap(), 5);
        assert_eq!(r.read_at(10_000, &mut tail).unwrap(), 0);
    }

    #[test]
    fn batched_sink_batches_and_counts() {
        let mut out = VecSink::default();
        let mut s = BatchedSink::new(&mut out, 4);
        s.write(b"abcdefghij").unwrap();
        assert_eq!(s.len(), 10);
        s.flush().unwrap();
        s.write_at(0, b"XY").unwrap();
        assert_eq!(out.bytes, b"XYcdefghij");
    }
}
