//! What the host reads of an ISO-BMFF file (MP4, M4A, MOV, 3GP) without decoding it: the
//! presentation length in `moov/mvhd` (the worker sizes a conversion's CPU allowance by
//! it) and the sample rate in the first audio track's sample description (the gateway
//! checks an explicit bitrate against it).
//!
//! The file is untrusted and this runs natively in the host, so the walk reads only box
//! headers and fixed-size records at offsets the file gives, every read bounded and
//! within the file, at most `max_boxes` box headers visited; anything odd answers
//! `None`. One walk serves a local file and a blob store: it reads through [`ReadAt`],
//! whose reads may be ready at once (a file, see [`std::fs::File`]'s impl) or wait on
//! the network (ranged reads of a blob).

use std::time::Duration;

/// Random access to the file being probed.
pub trait ReadAt {
    /// `len` bytes from `offset`; `None` if they cannot all be read.
    fn read_at(&self, offset: u64, len: usize) -> impl Future<Output = Option<Vec<u8>>> + Send;
}

/// A local file: its reads are ready at once, so a probe of one never waits (callers
/// without an executor take its result with `FutureExt::now_or_never`).
impl ReadAt for std::fs::File {
    fn read_at(&self, offset: u64, len: usize) -> impl Future<Output = Option<Vec<u8>>> + Send {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        std::future::ready(self.read_exact_at(&mut buf, offset).ok().map(|()| buf))
    }
}

/// A box: its type, where its payload starts, where it ends.
#[derive(Debug, Clone, Copy)]
struct BoxHeader {
    kind: [u8; 4],
    payload: u64,
    end: u64,
}

/// A bounded walk over the boxes of one file of `size` bytes.
pub struct Probe<'a, R: ?Sized> {
    file: &'a R,
    size: u64,
    /// Box headers that may still be read.
    budget: usize,
}

impl<'a, R: ReadAt + ?Sized> Probe<'a, R> {
    /// A walk over `file` (`size` bytes) that gives up after `max_boxes` box headers.
    pub fn new(file: &'a R, size: u64, max_boxes: usize) -> Self {
        Probe {
            file,
            size,
            budget: max_boxes,
        }
    }

    /// `len` bytes at `offset`, if they lie within the file.
    async fn read(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        if offset.checked_add(len as u64)? > self.size {
            return None;
        }
        self.file.read_at(offset, len).await
    }

    /// The box at `offset`, if it fits within `limit` (the end of its parent).
    async fn box_at(&self, offset: u64, limit: u64) -> Option<BoxHeader> {
        let head = self.read(offset, 8).await?;
        let size32 = u64::from(u32::from_be_bytes(head[..4].try_into().ok()?));
        let kind: [u8; 4] = head[4..8].try_into().ok()?;
        let (size, header_len) = match size32 {
            // Extends to the end of the enclosing box (or file).
            0 => (limit.checked_sub(offset)?, 8),
            1 => {
                let large = self.read(offset + 8, 8).await?;
                (u64::from_be_bytes(large[..8].try_into().ok()?), 16)
            }
            n => (n, 8),
        };
        let end = offset.checked_add(size)?;
        if size < header_len || end > limit {
            return None;
        }
        Some(BoxHeader {
            kind,
            payload: offset + header_len,
            end,
        })
    }

    /// The first box of type `kind` among the boxes from `start` to `end`; `None` past a
    /// box that does not fit, or once the budget is spent.
    async fn find(&mut self, kind: &[u8; 4], start: u64, end: u64) -> Option<BoxHeader> {
        let mut offset = start;
        while offset < end {
            self.budget = self.budget.checked_sub(1)?;
            let b = self.box_at(offset, end).await?;
            if &b.kind == kind {
                return Some(b);
            }
            offset = b.end;
        }
        None
    }

    /// The presentation length in `moov/mvhd`, if the file has one that says it.
    pub async fn duration(&mut self) -> Option<Duration> {
        let moov = self.find(b"moov", 0, self.size).await?;
        let mvhd = self.find(b"mvhd", moov.payload, moov.end).await?;
        let version = self.read(mvhd.payload, 1).await?[0];
        // version/flags, creation and modification times, then timescale and duration.
        let (timescale, duration) = if version == 1 {
            let rec = self.read(mvhd.payload + 4 + 16, 12).await?;
            (
                u32::from_be_bytes(rec[..4].try_into().ok()?),
                u64::from_be_bytes(rec[4..12].try_into().ok()?),
            )
        } else {
            let rec = self.read(mvhd.payload + 4 + 8, 8).await?;
            let d = u32::from_be_bytes(rec[4..8].try_into().ok()?);
            // All ones: "unknown" (fragmented files).
            let d = if d == u32::MAX {
                u64::MAX
            } else {
                u64::from(d)
            };
            (u32::from_be_bytes(rec[..4].try_into().ok()?), d)
        };
        if timescale == 0 || duration == 0 || duration == u64::MAX {
            return None;
        }
        Duration::try_from_secs_f64(duration as f64 / f64::from(timescale)).ok()
    }

    /// The sample rate of the first audio track (`moov/trak/mdia/minf/stbl/stsd`), if its
    /// sample description says one.
    pub async fn audio_sample_rate(&mut self) -> Option<u32> {
        let moov = self.find(b"moov", 0, self.size).await?;
        let mut offset = moov.payload;
        while let Some(trak) = self.find(b"trak", offset, moov.end).await {
            offset = trak.end;
            let Some(mdia) = self.find(b"mdia", trak.payload, trak.end).await else {
                continue;
            };
            let Some(hdlr) = self.find(b"hdlr", mdia.payload, mdia.end).await else {
                continue;
            };
            // hdlr: version/flags, pre_defined, then the handler type.
            if self.read(hdlr.payload + 8, 4).await.as_deref() != Some(b"soun".as_slice()) {
                continue;
            }
            let minf = self.find(b"minf", mdia.payload, mdia.end).await?;
            let stbl = self.find(b"stbl", minf.payload, minf.end).await?;
            let stsd = self.find(b"stsd", stbl.payload, stbl.end).await?;
            // stsd: version/flags, entry count, then the first entry (an
            // AudioSampleEntry, whose 16.16 sample rate sits 32 bytes into the entry).
            let rate = self.read(stsd.payload + 8 + 32, 2).await?;
            let rate = u32::from(u16::from_be_bytes([rate[0], rate[1]]));
            return (rate > 0).then_some(rate);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// Bytes in memory, read as a file would be.
    struct Mem(Vec<u8>);

    impl ReadAt for Mem {
        fn read_at(&self, offset: u64, len: usize) -> impl Future<Output = Option<Vec<u8>>> + Send {
            let start = usize::try_from(offset).unwrap();
            std::future::ready(self.0.get(start..start + len).map(<[u8]>::to_vec))
        }
    }

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut b = u32::try_from(payload.len() + 8)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(payload);
        b
    }

    /// A track whose handler is `handler` and whose sample description's first entry
    /// says `rate`.
    fn trak(handler: &[u8; 4], rate: u16) -> Vec<u8> {
        let mut hdlr = vec![0u8; 8];
        hdlr.extend_from_slice(handler);
        hdlr.resize(24, 0);
        let mut entry = vec![0u8; 32];
        entry.extend_from_slice(&rate.to_be_bytes());
        entry.resize(36, 0);
        let mut stsd = vec![0, 0, 0, 0, 0, 0, 0, 1];
        stsd.extend(boxed(b"mp4a", &entry[8..]));
        let stbl = boxed(b"stbl", &boxed(b"stsd", &stsd));
        let minf = boxed(b"minf", &stbl);
        let mdia = [boxed(b"mdhd", &[0; 24]), boxed(b"hdlr", &hdlr), minf].concat();
        boxed(b"trak", &boxed(b"mdia", &mdia))
    }

    fn rate_of(bytes: Vec<u8>, max_boxes: usize) -> Option<u32> {
        let file = Mem(bytes);
        let size = file.0.len() as u64;
        Probe::new(&file, size, max_boxes)
            .audio_sample_rate()
            .now_or_never()
            .expect("reads from memory are ready at once")
    }

    #[test]
    fn the_first_audio_track_gives_the_rate_wherever_moov_is() {
        let moov = boxed(b"moov", &[trak(b"vide", 0), trak(b"soun", 22_050)].concat());
        let mut moov_last = boxed(b"ftyp", b"isom\0\0\0\0");
        moov_last.extend(boxed(b"mdat", &[7u8; 1000]));
        moov_last.extend(&moov);
        assert_eq!(rate_of(moov_last.clone(), 256), Some(22_050));
        // The walk stops once its budget of box headers is spent.
        assert_eq!(rate_of(moov_last, 8), None);
        let only_video = boxed(b"moov", &trak(b"vide", 44_100));
        assert_eq!(rate_of(only_video, 256), None);
    }

    #[test]
    fn boxes_that_do_not_fit_end_the_walk() {
        // A moov claiming more than the file; a zero rate; nothing at all.
        let mut overlong = boxed(b"moov", &trak(b"soun", 8_000));
        overlong[3] += 1;
        assert_eq!(rate_of(overlong, 256), None);
        assert_eq!(rate_of(boxed(b"moov", &trak(b"soun", 0)), 256), None);
        assert_eq!(rate_of(Vec::new(), 256), None);
    }
}
