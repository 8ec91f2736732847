//! Our own look at the ISO-BMFF box tree: what symphonia 0.6.1 does not tell us.
//!
//! symphonia demuxes and decodes, but it neither applies edit lists nor names codecs it
//! does not know, nor says whether a track is encrypted. This module walks the top-level
//! boxes through the random-access source, reads the `moov` (size-capped) and extracts,
//! per track: handler, `mdhd` timescale/duration, the first non-empty `elst` edit,
//! the sample entry fourcc with its `esds` object type / AAC audio object type and
//! protection scheme (and the `pcmC` format of ISO/IEC 23003-5 PCM entries); and, for
//! the movie: the `ilst` tags that have an ID3 frame, and iTunes `iTunSMPB` gapless info.
//!
//! Every size read from the file is checked against its parent box before use, so a box
//! claiming 4 GiB or a table claiming 2^32 entries costs nothing.

use crate::ConvertError;
use crate::io::WindowedReader;

/// The largest `moov` we read into memory. 16 MiB of sample tables is ~10 hours of
/// AAC; symphonia builds its own tables from the same box, so this also bounds it.
pub(crate) const MAX_MOOV_BYTES: u64 = 16 << 20;
/// Cover art larger than this is dropped (with a warning) rather than copied to the tag.
pub(crate) const MAX_COVER_BYTES: usize = 4 << 20;

/// HE-AAC (audio object type 5): AAC-LC plus spectral band replication.
const HE_AAC: &str = "HE-AAC (AAC with SBR)";
/// HE-AACv2 (audio object type 29): HE-AAC plus parametric stereo.
const HE_AAC_V2: &str = "HE-AACv2 (AAC with SBR and parametric stereo)";
/// AAC Main (audio object type 1, MPEG-2 profile 0): AAC-LC plus prediction.
const AAC_MAIN: &str = "AAC Main profile";
/// AAC-SSR (audio object type 3, MPEG-2 profile 2): a gain-controlled filter bank.
const AAC_SSR: &str = "AAC-SSR (scalable sample rate)";

/// What the converter needs to know about the movie before decoding.
#[derive(Debug, Default)]
pub(crate) struct Movie {
    /// `mvhd` timescale (units of `elst` segment durations).
    pub movie_timescale: u32,
    /// Every `trak`, in file order.
    pub tracks: Vec<TrackBox>,
    /// Tags for the ID3v2 tag.
    pub tags: Tags,
    /// iTunes gapless info, if present.
    pub itunsmpb: Option<Gapless>,
    /// `moov` has an `mvex`: samples live in `moof`s.
    pub fragmented: bool,
    /// What was left out of the tags, for the log.
    pub warnings: Vec<String>,
}

/// One `trak`.
#[derive(Debug, Default, Clone)]
pub(crate) struct TrackBox {
    /// `tkhd` track id (symphonia's track id).
    pub id: u32,
    /// `hdlr` handler type (`soun` for audio).
    pub handler: [u8; 4],
    /// `mdhd` timescale.
    pub media_timescale: u32,
    /// `mdhd` duration in media timescale units.
    pub media_duration: u64,
    /// The first non-empty edit, if the track has an edit list.
    pub edit: Option<Edit>,
    /// `stsd` first sample entry: fourcc, or None when `stsd` is missing or empty.
    pub entry: Option<[u8; 4]>,
    /// `frma` original format of a protected entry.
    pub original_format: Option<[u8; 4]>,
    /// `schm` scheme type of a protected entry.
    pub scheme: Option<[u8; 4]>,
    /// `esds` decoder config object type indication.
    pub object_type: Option<u8>,
    /// AAC AudioSpecificConfig audio object type.
    pub audio_object_type: Option<u8>,
    /// `stsz`/`stz2` sample count (0 for fragmented tracks).
    pub sample_count: u32,
    /// The format of an ISO/IEC 23003-5 PCM entry (`ipcm`, `fpcm`), from its `pcmC` box.
    pub pcm: Option<IsoPcm>,
}

/// ISO/IEC 23003-5 PCM: what `ipcm`/`fpcm` and their `pcmC` box say. symphonia 0.6.1's
/// MP4 reader does not know these entries; the pipeline sets up its PCM decoder from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct IsoPcm {
    /// `fpcm`: IEEE floats; `ipcm`: signed integers.
    pub float: bool,
    /// `pcmC` PCM_sample_size: bits per sample.
    pub bits: u8,
    /// `pcmC` format_flags bit 0.
    pub little_endian: bool,
    /// The entry's channel count.
    pub channels: u16,
    /// The entry's sample rate (`srat` when present, else the 16.16 field, else the
    /// `mdhd` timescale).
    pub rate: u32,
    /// A `pcmC` box was found.
    pub configured: bool,
}

/// An edit list entry, raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edit {
    /// Start in the media, media timescale units.
    pub media_time: u64,
    /// Length in movie timescale units; 0 means "to the end".
    pub segment_duration: u64,
}

/// iTunes `iTunSMPB`: encoder delay and padding in samples, and the true length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gapless {
    pub priming: u32,
    pub padding: u32,
    pub frames: u64,
}

/// Tags copied to ID3v2: every iTunes-style `ilst` item that has an ID3 frame.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tags {
    /// Text frames by their ID3v2.4 id, in file order, one per id (the first item wins):
    /// `TIT2` title, `TPE1` artist, `TPE2` album artist, `TALB` album, `TCOM` composer,
    /// `TCON` genre, `TRCK` track ("n/total"), `TPOS` disc, `TBPM`, `TCMP` compilation,
    /// `TIT1` grouping, `TCOP`, `TSSE` encoder, `TENC` encoded by, `TPUB` publisher, the
    /// sort orders `TSOT`/`TSOP`/`TSOA`/`TSO2`/`TSOC`. The date is [`Tags::date`].
    pub text: Vec<([u8; 4], String)>,
    /// `©day` as written: a year or an ISO 8601 date (→ `TDRC`, or `TYER`/`TDAT` in v2.3).
    pub date: Option<String>,
    /// `©cmt` (→ `COMM`).
    pub comment: Option<String>,
    /// `©lyr` (→ `USLT`).
    pub lyrics: Option<String>,
    /// Freeform `----` items (name, value) other than iTunes' codec data (→ `TXXX`).
    pub user: Vec<(String, String)>,
    /// `covr` images (MIME type, bytes), the first the front cover (→ `APIC`).
    pub pictures: Vec<(String, Vec<u8>)>,
}

impl Tags {
    fn set(&mut self, id: &[u8; 4], value: String) {
        if !value.is_empty() && !self.text.iter().any(|(i, _)| i == id) {
            self.text.push((*id, value));
        }
    }
}

/// Pictures beyond this total are dropped (with a warning): the tag is held in memory.
pub(crate) const MAX_PICTURE_BYTES: usize = 8 << 20;

/// ID3v1 genre names (index = `gnre` value - 1): the 80 of ID3v1 and Winamp's additions
/// up to 125, which is what iTunes writes.
const GENRES: [&str; 126] = [
    "Blues",
    "Classic Rock",
    "Country",
    "Dance",
    "Disco",
    "Funk",
    "Grunge",
    "Hip-Hop",
    "Jazz",
    "Metal",
    "New Age",
    "Oldies",
    "Other",
    "Pop",
    "R&B",
    "Rap",
    "Reggae",
    "Rock",
    "Techno",
    "Industrial",
    "Alternative",
    "Ska",
    "Death Metal",
    "Pranks",
    "Soundtrack",
    "Euro-Techno",
    "Ambient",
    "Trip-Hop",
    "Vocal",
    "Jazz+Funk",
    "Fusion",
    "Trance",
    "Classical",
    "Instrumental",
    "Acid",
    "House",
    "Game",
    "Sound Clip",
    "Gospel",
    "Noise",
    "Alternative Rock",
    "Bass",
    "Soul",
    "Punk",
    "Space",
    "Meditative",
    "Instrumental Pop",
    "Instrumental Rock",
    "Ethnic",
    "Gothic",
    "Darkwave",
    "Techno-Industrial",
    "Electronic",
    "Pop-Folk",
    "Eurodance",
    "Dream",
    "Southern Rock",
    "Comedy",
    "Cult",
    "Gangsta",
    "Top 40",
    "Christian Rap",
    "Pop/Funk",
    "Jungle",
    "Native American",
    "Cabaret",
    "New Wave",
    "Psychedelic",
    "Rave",
    "Showtunes",
    "Trailer",
    "Lo-Fi",
    "Tribal",
    "Acid Punk",
    "Acid Jazz",
    "Polka",
    "Retro",
    "Musical",
    "Rock & Roll",
    "Hard Rock",
    "Folk",
    "Folk-Rock",
    "National Folk",
    "Swing",
    "Fast Fusion",
    "Bebop",
    "Latin",
    "Revival",
    "Celtic",
    "Bluegrass",
    "Avantgarde",
    "Gothic Rock",
    "Progressive Rock",
    "Psychedelic Rock",
    "Symphonic Rock",
    "Slow Rock",
    "Big Band",
    "Chorus",
    "Easy Listening",
    "Acoustic",
    "Humour",
    "Speech",
    "Chanson",
    "Opera",
    "Chamber Music",
    "Sonata",
    "Symphony",
    "Booty Bass",
    "Primus",
    "Porn Groove",
    "Satire",
    "Slow Jam",
    "Club",
    "Tango",
    "Samba",
    "Folklore",
    "Ballad",
    "Power Ballad",
    "Rhythmic Soul",
    "Freestyle",
    "Duet",
    "Punk Rock",
    "Drum Solo",
    "A cappella",
    "Euro-House",
    "Dance Hall",
];

impl TrackBox {
    /// The codec this track carries, as we name it.
    pub(crate) fn codec(&self) -> CodecKind {
        let Some(entry) = self.entry else {
            return CodecKind::Broken("audio track has no sample description (stsd)".into());
        };
        match &entry {
            b"drms" | b"drmi" => return CodecKind::Drm("fairplay".into()),
            b"enca" => {
                let scheme = self
                    .scheme
                    .map(|s| fourcc_name(&s))
                    .unwrap_or_else(|| "cenc".into());
                return CodecKind::Drm(scheme);
            }
            _ => {}
        }
        match &entry {
            b"mp4a" => self.mp4a_codec(),
            b"alac" => CodecKind::Decodable("alac"),
            b"fLaC" => CodecKind::Decodable("flac"),
            b".mp3" => CodecKind::Decodable("mp3"),
            b"sowt" | b"twos" | b"lpcm" | b"in24" | b"in32" | b"fl32" | b"fl64" | b"raw "
            | b"NONE" => CodecKind::Decodable("pcm"),
            b"ipcm" | b"fpcm" => self.iso_pcm_codec(),
            b"ac-3" => CodecKind::Unsupported("ac-3".into()),
            b"ec-3" => CodecKind::Unsupported("e-ac-3".into()),
            b"ac-4" => CodecKind::Unsupported("ac-4".into()),
            b"Opus" => CodecKind::Unsupported("opus".into()),
            b"samr" => CodecKind::Unsupported("amr-nb".into()),
            b"sawb" => CodecKind::Unsupported("amr-wb".into()),
            b"owma" | b"wma " | b"WMA2" => CodecKind::Unsupported("wma".into()),
            b"dtsc" | b"dtsh" | b"dtsl" | b"dtse" => CodecKind::Unsupported("dts".into()),
            b"mha1" | b"mhm1" => CodecKind::Unsupported("mpeg-h".into()),
            b"sqcp" | b"Qclp" => CodecKind::Unsupported("qcelp".into()),
            b"ulaw" => CodecKind::Unsupported("g.711 mu-law".into()),
            b"alaw" => CodecKind::Unsupported("g.711 a-law".into()),
            b"ima4" => CodecKind::Unsupported("adpcm-ima".into()),
            other => CodecKind::Unsupported(fourcc_name(other)),
        }
    }

    fn iso_pcm_codec(&self) -> CodecKind {
        let Some(pcm) = self.pcm.filter(|p| p.configured) else {
            return CodecKind::Broken(
                "the PCM sample description (ipcm/fpcm) has no pcmC box giving its sample format"
                    .into(),
            );
        };
        let kind = if pcm.float {
            "floating-point"
        } else {
            "integer"
        };
        match (pcm.float, pcm.bits) {
            (false, 16 | 24 | 32) | (true, 32 | 64) => {}
            (_, bits) => {
                return CodecKind::Unsupported(format!("{bits}-bit {kind} PCM"));
            }
        }
        if pcm.channels == 0 || pcm.rate == 0 {
            return CodecKind::Broken(format!(
                "the PCM sample description gives {} channels at {} Hz",
                pcm.channels, pcm.rate
            ));
        }
        CodecKind::Decodable("pcm")
    }

    fn mp4a_codec(&self) -> CodecKind {
        match self.object_type {
            // MPEG-4 audio: the AudioSpecificConfig says which.
            // Names for people (they reach the owner's failure e-mail): each AAC profile we
            // do not decode says which kind of AAC it is.
            Some(0x40) | None => match self.audio_object_type {
                Some(2) | None => CodecKind::Decodable("aac"),
                Some(5) => CodecKind::Unsupported(HE_AAC.into()),
                Some(29) => CodecKind::Unsupported(HE_AAC_V2.into()),
                Some(1) => CodecKind::Unsupported(AAC_MAIN.into()),
                Some(3) => CodecKind::Unsupported(AAC_SSR.into()),
                Some(4) => CodecKind::Unsupported("AAC-LTP (long-term prediction)".into()),
                Some(23) => CodecKind::Unsupported("AAC-LD (low delay)".into()),
                Some(39) => CodecKind::Unsupported("AAC-ELD (enhanced low delay)".into()),
                Some(42) => CodecKind::Unsupported("xHE-AAC (USAC)".into()),
                Some(36) => CodecKind::Unsupported("MPEG-4 ALS (lossless)".into()),
                Some(32..=34) => CodecKind::Decodable("mp3"),
                Some(aot) => CodecKind::Unsupported(format!("mpeg-4 audio object type {aot}")),
            },
            Some(0x67) => CodecKind::Decodable("aac"),
            Some(0x66) => CodecKind::Unsupported(AAC_MAIN.into()),
            Some(0x68) => CodecKind::Unsupported(AAC_SSR.into()),
            Some(0x69 | 0x6B) => CodecKind::Decodable("mp3"),
            Some(0xA5) => CodecKind::Unsupported("ac-3".into()),
            Some(0xA6) => CodecKind::Unsupported("e-ac-3".into()),
            Some(0xA9..=0xAC) => CodecKind::Unsupported("dts".into()),
            Some(0xAD) => CodecKind::Unsupported("opus".into()),
            Some(0xDD) => CodecKind::Unsupported("vorbis".into()),
            Some(0xE1) => CodecKind::Unsupported("qcelp".into()),
            Some(oti) => CodecKind::Unsupported(format!("mp4a object type 0x{oti:02x}")),
        }
    }
}

/// What a track's sample entry means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CodecKind {
    /// symphonia decodes it; our name for it.
    Decodable(&'static str),
    /// Named, but not decodable here.
    Unsupported(String),
    /// Encrypted with this scheme.
    Drm(String),
    /// The track itself is malformed.
    Broken(String),
}

fn fourcc_name(cc: &[u8; 4]) -> String {
    let s: String = cc
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    s.trim_end().to_ascii_lowercase()
}

fn corrupt(msg: impl Into<String>) -> ConvertError {
    ConvertError::CorruptInput(msg.into())
}

/// Walks the top-level boxes and parses the `moov`.
pub(crate) fn read_movie(reader: &mut WindowedReader<'_>) -> Result<Movie, ConvertError> {
    let size = reader.size();
    if size == 0 {
        return Err(corrupt("empty file"));
    }
    let mut offset = 0u64;
    let mut moov: Option<(u64, u64)> = None;
    while offset < size {
        let mut head = [0u8; 16];
        let avail = (size - offset).min(16) as usize;
        if avail < 8 {
            if offset == 0 {
                return Err(corrupt(format!("not an MP4/MOV file: only {size} bytes")));
            }
            break; // trailing junk shorter than a box header
        }
        if !reader
            .read_exact_at(offset, &mut head[..avail])
            .map_err(crate::io_error)?
        {
            break;
        }
        let mut box_size = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")) as u64;
        let kind: [u8; 4] = head[4..8].try_into().expect("4 bytes");
        let mut header = 8u64;
        if box_size == 1 {
            if avail < 16 {
                return Err(corrupt(format!("box header truncated at offset {offset}")));
            }
            box_size = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
            header = 16;
        } else if box_size == 0 {
            box_size = size - offset;
        }
        if box_size < header {
            return Err(corrupt(format!(
                "bad box size {box_size} for '{}' at offset {offset}",
                fourcc_name(&kind)
            )));
        }
        if offset == 0
            && !matches!(
                &kind,
                b"ftyp"
                    | b"moov"
                    | b"free"
                    | b"skip"
                    | b"wide"
                    | b"mdat"
                    | b"styp"
                    | b"uuid"
                    | b"pnot"
                    | b"sidx"
                    | b"moof"
            )
        {
            return Err(corrupt(
                "not an MP4/MOV file: no box structure at the start",
            ));
        }
        if &kind == b"moov" {
            if offset + box_size > size {
                return Err(corrupt(format!(
                    "moov box at offset {offset} claims {box_size} bytes but the file ends after {}",
                    size - offset
                )));
            }
            moov = Some((offset + header, box_size - header));
            break;
        }
        offset = match offset.checked_add(box_size) {
            Some(next) => next,
            None => break,
        };
    }
    let Some((moov_start, moov_len)) = moov else {
        return Err(corrupt(
            "no moov box: not an MP4/MOV file, or its index is missing",
        ));
    };
    if moov_len > MAX_MOOV_BYTES {
        return Err(corrupt(format!(
            "moov box of {moov_len} bytes exceeds the {MAX_MOOV_BYTES}-byte limit"
        )));
    }
    let mut body = vec![0u8; moov_len as usize];
    if !reader
        .read_exact_at(moov_start, &mut body)
        .map_err(crate::io_error)?
    {
        return Err(corrupt("moov box truncated"));
    }
    parse_moov(&body)
}

/// Iterates the child boxes of `data`, checking every size against the parent.
struct Boxes<'a> {
    data: &'a [u8],
    pos: usize,
    parent: &'static str,
}

impl<'a> Boxes<'a> {
    fn new(data: &'a [u8], parent: &'static str) -> Self {
        Boxes {
            data,
            pos: 0,
            parent,
        }
    }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<([u8; 4], &'a [u8]), ConvertError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.data[self.pos..];
        if rest.len() < 8 {
            // Up to 7 trailing bytes (some muxers pad with a 4-byte 0) are not a box.
            return None;
        }
        let size32 = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as u64;
        let kind: [u8; 4] = rest[4..8].try_into().expect("4 bytes");
        let (size, header) = match size32 {
            0 => (rest.len() as u64, 8usize),
            1 if rest.len() >= 16 => (
                u64::from_be_bytes(rest[8..16].try_into().expect("8 bytes")),
                16usize,
            ),
            _ => (size32, 8usize),
        };
        if size < header as u64 || size > rest.len() as u64 {
            self.pos = self.data.len();
            return Some(Err(corrupt(format!(
                "bad size {size} of box '{}' inside {} ({} bytes left)",
                fourcc_name(&kind),
                self.parent,
                rest.len()
            ))));
        }
        let size = size as usize;
        self.pos += size;
        Some(Ok((kind, &rest[header..size])))
    }
}

/// Big-endian field reader over a box body; every read is bounds-checked.
struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Fields { data, pos: 0, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ConvertError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(corrupt(format!("{} box too short", self.what)));
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ConvertError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ConvertError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, ConvertError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, ConvertError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.data[self.pos..];
        self.pos = self.data.len();
        s
    }
}

fn parse_moov(body: &[u8]) -> Result<Movie, ConvertError> {
    let mut movie = Movie::default();
    for child in Boxes::new(body, "moov") {
        let (kind, data) = child?;
        match &kind {
            b"mvhd" => {
                let mut f = Fields::new(data, "mvhd");
                let version = f.u8()?;
                f.take(3)?;
                f.take(if version == 1 { 16 } else { 8 })?;
                movie.movie_timescale = f.u32()?;
            }
            b"trak" => movie.tracks.push(parse_trak(data)?),
            b"mvex" => movie.fragmented = true,
            b"udta" => {
                for child in Boxes::new(data, "udta") {
                    let Ok((kind, data)) = child else {
                        // Malformed user data is not worth failing a conversion for.
                        break;
                    };
                    if &kind == b"meta" {
                        parse_meta(data, &mut movie);
                    }
                }
            }
            b"meta" => parse_meta(data, &mut movie),
            _ => {}
        }
    }
    Ok(movie)
}

fn parse_trak(body: &[u8]) -> Result<TrackBox, ConvertError> {
    let mut t = TrackBox::default();
    for child in Boxes::new(body, "trak") {
        let (kind, data) = child?;
        match &kind {
            b"tkhd" => {
                let mut f = Fields::new(data, "tkhd");
                let version = f.u8()?;
                f.take(3)?;
                f.take(if version == 1 { 16 } else { 8 })?;
                t.id = f.u32()?;
            }
            b"edts" => {
                for child in Boxes::new(data, "edts") {
                    let (kind, data) = child?;
                    if &kind == b"elst" {
                        t.edit = parse_elst(data)?;
                    }
                }
            }
            b"mdia" => parse_mdia(data, &mut t)?,
            _ => {}
        }
    }
    Ok(t)
}

fn parse_elst(data: &[u8]) -> Result<Option<Edit>, ConvertError> {
    let mut f = Fields::new(data, "elst");
    let version = f.u8()?;
    f.take(3)?;
    let count = f.u32()?;
    let entry_len = if version == 1 { 20 } else { 12 };
    if (count as usize).saturating_mul(entry_len) > data.len() - 8 {
        return Err(corrupt(format!(
            "elst claims {count} entries, more than fit in its box"
        )));
    }
    for _ in 0..count {
        let (segment_duration, media_time) = if version == 1 {
            (f.u64()?, f.u64()? as i64)
        } else {
            (f.u32()? as u64, f.u32()? as i32 as i64)
        };
        f.take(4)?; // media rate
        if media_time >= 0 {
            return Ok(Some(Edit {
                media_time: media_time as u64,
                segment_duration,
            }));
        }
    }
    Ok(None)
}

fn parse_mdia(body: &[u8], t: &mut TrackBox) -> Result<(), ConvertError> {
    for child in Boxes::new(body, "mdia") {
        let (kind, data) = child?;
        match &kind {
            b"mdhd" => {
                let mut f = Fields::new(data, "mdhd");
                let version = f.u8()?;
                f.take(3)?;
                if version == 1 {
                    f.take(16)?;
                    t.media_timescale = f.u32()?;
                    t.media_duration = f.u64()?;
                } else {
                    f.take(8)?;
                    t.media_timescale = f.u32()?;
                    let d = f.u32()?;
                    t.media_duration = if d == u32::MAX { 0 } else { d as u64 };
                }
            }
            b"hdlr" => {
                let mut f = Fields::new(data, "hdlr");
                f.take(8)?;
                t.handler = f.take(4)?.try_into().expect("4 bytes");
            }
            b"minf" => {
                for child in Boxes::new(data, "minf") {
                    let (kind, data) = child?;
                    if &kind == b"stbl" {
                        parse_stbl(data, t)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_stbl(body: &[u8], t: &mut TrackBox) -> Result<(), ConvertError> {
    for child in Boxes::new(body, "stbl") {
        let (kind, data) = child?;
        match &kind {
            b"stsd" => parse_stsd(data, t)?,
            b"stsz" | b"stz2" => {
                let mut f = Fields::new(data, "stsz");
                f.take(4)?;
                let fixed = f.u32()?;
                let count = f.u32()?;
                let field_bits = if &kind == b"stz2" {
                    (fixed & 0xff) as u64
                } else {
                    32
                };
                // With per-sample sizes, the table must fit in the box.
                if (&kind == b"stz2" || fixed == 0)
                    && (count as u64 * field_bits).div_ceil(8) > (data.len() - 12) as u64
                {
                    return Err(corrupt(format!(
                        "sample size table claims {count} entries, more than fit in its box"
                    )));
                }
                t.sample_count = count;
            }
            b"stts" | b"stsc" | b"stco" | b"co64" | b"ctts" | b"stss" => {
                let entry = match &kind {
                    b"stts" | b"ctts" => 8,
                    b"stsc" => 12,
                    b"co64" => 8,
                    _ => 4,
                };
                let mut f = Fields::new(data, "sample table");
                f.take(4)?;
                let count = f.u32()?;
                if count as u64 * entry > (data.len() - 8) as u64 {
                    return Err(corrupt(format!(
                        "'{}' claims {count} entries, more than fit in its box",
                        fourcc_name(&kind)
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_stsd(data: &[u8], t: &mut TrackBox) -> Result<(), ConvertError> {
    let mut f = Fields::new(data, "stsd");
    f.take(4)?;
    let count = f.u32()?;
    if count == 0 {
        return Ok(());
    }
    // Only the first entry matters: symphonia uses it too.
    let Some(first) = Boxes::new(f.rest(), "stsd").next() else {
        return Ok(());
    };
    let (kind, entry) = first?;
    t.entry = Some(kind);
    if t.handler != *b"soun" {
        return Ok(());
    }
    // AudioSampleEntry: 6 reserved + 2 data-ref, then version-dependent fields.
    let mut f = Fields::new(entry, "audio sample entry");
    f.take(8)?;
    let version = f.u16()?;
    f.take(6)?;
    let channels = f.u16()?;
    f.take(6)?;
    let rate = f.u32()? >> 16;
    if matches!(&kind, b"ipcm" | b"fpcm") {
        // ISO-only entries: version 1 is ISO's AudioSampleEntryV1 (no QuickTime fields;
        // the rate may be in an `srat` child).
        t.pcm = Some(IsoPcm {
            float: &kind == b"fpcm",
            channels,
            rate: if rate > 0 { rate } else { t.media_timescale },
            ..IsoPcm::default()
        });
    } else {
        match version {
            1 => {
                f.take(16)?;
            }
            2 => {
                f.take(36)?;
            }
            _ => {}
        }
    }
    parse_entry_children(f.rest(), t);
    Ok(())
}

/// Sample entry children: `esds` (maybe inside QuickTime `wave`) and `sinf`. Damage
/// here only costs us the detail (codec name / scheme), so it is tolerated.
fn parse_entry_children(data: &[u8], t: &mut TrackBox) {
    for (kind, data) in Boxes::new(data, "sample entry").map_while(Result::ok) {
        match &kind {
            b"esds" => parse_esds(data, t),
            b"wave" => parse_entry_children(data, t),
            // ISO/IEC 23003-5: version and flags, format_flags, PCM_sample_size.
            b"pcmC" if data.len() >= 6 => {
                if let Some(pcm) = t.pcm.as_mut() {
                    pcm.little_endian = data[4] & 1 != 0;
                    pcm.bits = data[5];
                    pcm.configured = true;
                }
            }
            // ISO AudioSampleEntryV1's sampling rate: version and flags, then the rate.
            b"srat" if data.len() >= 8 => {
                if let Some(pcm) = t.pcm.as_mut() {
                    let rate = u32::from_be_bytes(data[4..8].try_into().expect("4 bytes"));
                    if rate > 0 {
                        pcm.rate = rate;
                    }
                }
            }
            b"sinf" => {
                for (kind, data) in Boxes::new(data, "sinf").map_while(Result::ok) {
                    match &kind {
                        b"frma" if data.len() >= 4 => {
                            t.original_format = Some(data[..4].try_into().expect("4 bytes"));
                        }
                        b"schm" if data.len() >= 8 => {
                            t.scheme = Some(data[4..8].try_into().expect("4 bytes"));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

fn parse_esds(data: &[u8], t: &mut TrackBox) {
    let Some(mut d) = data.get(4..) else { return };
    // Descriptor: tag, then a length of up to 4 bytes of 7 bits.
    fn descriptor<'a>(d: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
        let (&tag, mut rest) = d.split_first()?;
        let mut len = 0usize;
        for _ in 0..4 {
            let (&b, r) = rest.split_first()?;
            rest = r;
            len = (len << 7) | (b & 0x7f) as usize;
            if b & 0x80 == 0 {
                break;
            }
        }
        let len = len.min(rest.len());
        let (body, after) = rest.split_at(len);
        *d = after;
        Some((tag, body))
    }
    let Some((0x03, es)) = descriptor(&mut d) else {
        return;
    };
    let Some((&[_, _, flags], mut rest)) = es.split_first_chunk::<3>() else {
        return;
    };
    if flags & 0x80 != 0 {
        rest = rest.get(2..).unwrap_or_default();
    }
    if flags & 0x40 != 0 {
        let n = rest.first().copied().unwrap_or(0) as usize;
        rest = rest.get(1 + n..).unwrap_or_default();
    }
    if flags & 0x20 != 0 {
        rest = rest.get(2..).unwrap_or_default();
    }
    while let Some((tag, body)) = descriptor(&mut rest) {
        if tag != 0x04 {
            continue;
        }
        let Some(&oti) = body.first() else { return };
        t.object_type = Some(oti);
        let mut dc = body.get(13..).unwrap_or_default();
        while let Some((tag, asc)) = descriptor(&mut dc) {
            if tag == 0x05 && !asc.is_empty() {
                let mut aot = asc[0] >> 3;
                if aot == 31 && asc.len() >= 2 {
                    aot = 32 + (((asc[0] & 0x07) << 3) | (asc[1] >> 5));
                }
                t.audio_object_type = Some(aot);
            }
        }
        return;
    }
}

/// `meta` (full box in ISO files, plain in QuickTime ones) → `ilst`.
fn parse_meta(data: &[u8], movie: &mut Movie) {
    let body = match data.get(0..4) {
        // ISO: version and flags (0) before the children; QuickTime: the first child's size.
        Some([0, 0, 0, 0]) => &data[4..],
        _ => data,
    };
    for (kind, data) in Boxes::new(body, "meta").map_while(Result::ok) {
        if &kind == b"ilst" {
            parse_ilst(data, movie);
        }
    }
}

fn parse_ilst(data: &[u8], movie: &mut Movie) {
    for (kind, item) in Boxes::new(data, "ilst").map_while(Result::ok) {
        let mut name: Option<String> = None;
        for (child, body) in Boxes::new(item, "ilst item").map_while(Result::ok) {
            match &child {
                b"name" => {
                    name = body
                        .get(4..)
                        .map(|n| String::from_utf8_lossy(n).into_owned());
                }
                b"data" if body.len() >= 8 => {
                    let type_code =
                        u32::from_be_bytes(body[0..4].try_into().expect("4 bytes")) & 0x00ff_ffff;
                    tag_item(&kind, name.as_deref(), type_code, &body[8..], movie);
                }
                _ => {}
            }
        }
    }
}

/// The text of a `data` payload: UTF-8 (type 1 and most others) or UTF-16BE (type 2).
fn data_text(type_code: u32, payload: &[u8]) -> String {
    let text = if type_code == 2 {
        let units: Vec<u16> = payload
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(payload).into_owned()
    };
    text.trim_end_matches('\0').to_string()
}

/// "n" or "n/total" from `trkn`/`disk`'s binary payload (2 bytes pad, n, total).
fn number_pair(payload: &[u8]) -> Option<String> {
    let n = u16::from_be_bytes(payload.get(2..4)?.try_into().ok()?);
    let total = payload
        .get(4..6)
        .map_or(0, |t| u16::from_be_bytes([t[0], t[1]]));
    match (n, total) {
        (0, _) => None,
        (n, 0) => Some(n.to_string()),
        (n, t) => Some(format!("{n}/{t}")),
    }
}

/// A big-endian integer payload of 1 to 8 bytes.
fn data_int(payload: &[u8]) -> Option<u64> {
    (1..=8)
        .contains(&payload.len())
        .then(|| payload.iter().fold(0u64, |a, &b| (a << 8) | b as u64))
}

/// One `ilst` item's `data`: into the ID3 frame it maps to, if any.
fn tag_item(kind: &[u8; 4], name: Option<&str>, type_code: u32, payload: &[u8], movie: &mut Movie) {
    let tags = &mut movie.tags;
    let text = || data_text(type_code, payload);
    let id: Option<&[u8; 4]> = match kind {
        b"\xa9nam" => Some(b"TIT2"),
        b"\xa9ART" => Some(b"TPE1"),
        b"aART" => Some(b"TPE2"),
        b"\xa9alb" => Some(b"TALB"),
        b"\xa9wrt" => Some(b"TCOM"),
        b"\xa9gen" => Some(b"TCON"),
        b"\xa9grp" => Some(b"TIT1"),
        b"cprt" => Some(b"TCOP"),
        b"\xa9too" => Some(b"TSSE"),
        b"\xa9enc" => Some(b"TENC"),
        b"\xa9pub" => Some(b"TPUB"),
        b"sonm" => Some(b"TSOT"),
        b"soar" => Some(b"TSOP"),
        b"soal" => Some(b"TSOA"),
        b"soaa" => Some(b"TSO2"),
        b"soco" => Some(b"TSOC"),
        _ => None,
    };
    if let Some(id) = id {
        tags.set(id, text());
        return;
    }
    match kind {
        b"\xa9day" if tags.date.is_none() => {
            let date = text();
            if date.len() >= 4 && date.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
                tags.date = Some(date);
            }
        }
        b"\xa9cmt" if tags.comment.is_none() => {
            tags.comment = Some(text()).filter(|t| !t.is_empty());
        }
        b"\xa9lyr" if tags.lyrics.is_none() => {
            tags.lyrics = Some(text()).filter(|t| !t.is_empty());
        }
        b"trkn" => {
            if let Some(v) = number_pair(payload) {
                tags.set(b"TRCK", v);
            }
        }
        b"disk" => {
            if let Some(v) = number_pair(payload) {
                tags.set(b"TPOS", v);
            }
        }
        b"gnre" => {
            if let Some(name) = data_int(payload)
                .and_then(|g| g.checked_sub(1))
                .and_then(|g| GENRES.get(g as usize))
            {
                tags.set(b"TCON", name.to_string());
            }
        }
        b"tmpo" => {
            if let Some(bpm) = data_int(payload).filter(|&b| b > 0) {
                tags.set(b"TBPM", bpm.to_string());
            }
        }
        b"cpil" if data_int(payload).is_some_and(|c| c != 0) => {
            tags.set(b"TCMP", "1".into());
        }
        b"covr" => {
            let held: usize = tags.pictures.iter().map(|(_, p)| p.len()).sum();
            if payload.len() > MAX_COVER_BYTES || held + payload.len() > MAX_PICTURE_BYTES {
                movie.warnings.push(format!(
                    "a cover picture of {} bytes was left out of the tags (at most {} bytes \
                     each, {} in all)",
                    payload.len(),
                    MAX_COVER_BYTES,
                    MAX_PICTURE_BYTES
                ));
                return;
            }
            let mime = match type_code {
                14 => "image/png",
                27 => "image/bmp",
                _ if payload.starts_with(b"\x89PNG") => "image/png",
                _ => "image/jpeg",
            };
            tags.pictures.push((mime.to_string(), payload.to_vec()));
        }
        b"----" => match name {
            Some("iTunSMPB") => movie.itunsmpb = parse_itunsmpb(payload),
            // The source codec's gapless and loudness data: wrong for the MP3 (a player
            // reading iTunSMPB from the MP3 would cut the wrong samples).
            Some("iTunNORM" | "iTunes_CDDB_IDs" | "Encoding Params") | None => {}
            Some(name) => {
                let value = text();
                if !value.is_empty() && !name.is_empty() {
                    tags.user.push((name.to_string(), value));
                }
            }
        },
        _ => {}
    }
}

/// `" 00000000 00000840 0000037C 0000000000046E00 ..."`: flags, priming, padding,
/// original frame count, in hex.
fn parse_itunsmpb(payload: &[u8]) -> Option<Gapless> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut fields = text.split_ascii_whitespace();
    fields.next()?;
    let priming = u32::from_str_radix(fields.next()?, 16).ok()?;
    let padding = u32::from_str_radix(fields.next()?, 16).ok()?;
    let frames = u64::from_str_radix(fields.next()?, 16).ok()?;
    (frames > 0).then_some(Gapless {
        priming,
        padding,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itunsmpb_parses_priming_padding_and_length() {
        let g = parse_itunsmpb(b" 00000000 00000840 0000037C 0000000000046E00 00000000").unwrap();
        assert_eq!(
            g,
            Gapless {
                priming: 0x840,
                padding: 0x37c,
                frames: 0x46e00
            }
        );
    }

    #[test]
    fn aac_profiles_we_cannot_decode_are_named_in_words() {
        let track = |aot| TrackBox {
            entry: Some(*b"mp4a"),
            object_type: Some(0x40),
            audio_object_type: Some(aot),
            ..TrackBox::default()
        };
        assert_eq!(track(2).codec(), CodecKind::Decodable("aac"));
        assert_eq!(
            track(5).codec(),
            CodecKind::Unsupported("HE-AAC (AAC with SBR)".into())
        );
        assert_eq!(
            track(29).codec(),
            CodecKind::Unsupported("HE-AACv2 (AAC with SBR and parametric stereo)".into())
        );
        assert_eq!(
            track(1).codec(),
            CodecKind::Unsupported("AAC Main profile".into())
        );
        assert_eq!(
            track(4).codec(),
            CodecKind::Unsupported("AAC-LTP (long-term prediction)".into())
        );
    }

    #[test]
    fn boxes_reject_a_child_larger_than_its_parent() {
        let data = [0xff, 0xff, 0xff, 0xf0, b'f', b'r', b'e', b'e', 0, 0, 0, 0];
        let first = Boxes::new(&data, "test").next().unwrap();
        assert!(matches!(first, Err(ConvertError::CorruptInput(_))));
    }

    #[test]
    fn huge_sample_table_is_rejected_before_allocation() {
        // stsz: version/flags, fixed size 0, count 2^32-1, no entries.
        let stsz = [0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        let mut stbl = Vec::new();
        stbl.extend_from_slice(&(8 + stsz.len() as u32).to_be_bytes());
        stbl.extend_from_slice(b"stsz");
        stbl.extend_from_slice(&stsz);
        let mut t = TrackBox::default();
        assert!(matches!(
            parse_stbl(&stbl, &mut t),
            Err(ConvertError::CorruptInput(_))
        ));
    }
}
