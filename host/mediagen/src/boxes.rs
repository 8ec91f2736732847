//! Byte-level helpers: big-endian fields and ISO-BMFF boxes whose size may count bytes
//! written after them (a "tail": the chunk offset table, streamed last).

/// A growing box body.
#[derive(Default)]
pub(crate) struct Body(pub Vec<u8>);

impl Body {
    pub(crate) fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    pub(crate) fn zeros(mut self, n: usize) -> Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    /// A 32-bit field, or a 64-bit one in a version 1 box.
    pub(crate) fn uv(self, v1: bool, v: u64) -> Self {
        if v1 { self.u64(v) } else { self.u32(v as u32) }
    }
}

/// The identity matrix of `mvhd`/`tkhd`.
pub(crate) const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// A box of `parts` followed by `tail` more bytes the caller writes after it.
pub(crate) fn bx(kind: &[u8; 4], parts: &[&[u8]], tail: u64) -> Vec<u8> {
    let body: usize = parts.iter().map(|p| p.len()).sum();
    let size =
        u32::try_from(8 + body as u64 + tail).expect("boxes other than mdat stay far below 4 GiB");
    let mut out = Vec::with_capacity(8 + body);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(kind);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// A full box: version, flags, then `parts` (and `tail`).
pub(crate) fn full(kind: &[u8; 4], version: u8, flags: u32, parts: &[&[u8]], tail: u64) -> Vec<u8> {
    let vf = (u32::from(version) << 24 | (flags & 0x00ff_ffff)).to_be_bytes();
    let mut all: Vec<&[u8]> = vec![&vf];
    all.extend_from_slice(parts);
    bx(kind, &all, tail)
}

/// The header of an `mdat` of `payload` bytes: 8 bytes, or 16 (64-bit size) when the
/// box would not fit a 32-bit size.
pub(crate) fn mdat_header(payload: u64) -> Vec<u8> {
    match u32::try_from(payload + 8) {
        Ok(size) => Body::default().u32(size).bytes(b"mdat").0,
        Err(_) => Body::default().u32(1).bytes(b"mdat").u64(payload + 16).0,
    }
}
