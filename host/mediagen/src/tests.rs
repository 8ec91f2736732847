//! Structure: every box's size adds up, the headers say the right durations, the
//! chunk offsets and fragment data offsets land on the right bytes of the `mdat`.

use super::*;

/// A parsed box: type, offset of its start, header length, total size.
#[derive(Debug, Clone)]
struct Node {
    kind: [u8; 4],
    start: usize,
    header: usize,
    size: u64,
    children: Vec<Node>,
}

const CONTAINERS: [&[u8; 4]; 11] = [
    b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl", b"mvex", b"moof", b"traf", b"edts",
    b"udta",
];

/// Parses boxes in `file[start..end]`; sizes must tile the range exactly, except that
/// the last box may run past the end of the file (`truncated_ok`).
fn parse(file: &[u8], start: usize, end: usize, truncated_ok: bool) -> Vec<Node> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        assert!(at + 8 <= end, "box header at {at} cut off");
        let mut size = u64::from(u32::from_be_bytes(file[at..at + 4].try_into().unwrap()));
        let kind: [u8; 4] = file[at + 4..at + 8].try_into().unwrap();
        let mut header = 8;
        if size == 1 {
            size = u64::from_be_bytes(file[at + 8..at + 16].try_into().unwrap());
            header = 16;
        }
        assert!(
            size >= header as u64,
            "{:?}",
            String::from_utf8_lossy(&kind)
        );
        let box_end = at as u64 + size;
        if box_end > end as u64 {
            assert!(
                truncated_ok && end == file.len(),
                "'{}' at {at} of {size} bytes overruns its parent ending at {end}",
                String::from_utf8_lossy(&kind)
            );
        }
        let children = if CONTAINERS.contains(&&kind) {
            parse(file, at + header, box_end as usize, false)
        } else {
            Vec::new()
        };
        out.push(Node {
            kind,
            start: at,
            header,
            size,
            children,
        });
        at = box_end.min(end as u64) as usize;
        if box_end > end as u64 {
            break;
        }
    }
    assert_eq!(at, end);
    out
}

fn find<'a>(nodes: &'a [Node], path: &str) -> Option<&'a Node> {
    let mut parts = path.split('/');
    let first = parts.next()?;
    let mut node = nodes.iter().find(|n| n.kind == first.as_bytes())?;
    for part in parts {
        node = node.children.iter().find(|n| n.kind == part.as_bytes())?;
    }
    Some(node)
}

fn body<'a>(file: &'a [u8], node: &Node) -> &'a [u8] {
    &file[node.start + node.header..node.start + node.size as usize]
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// (timescale, duration) of an mvhd/mdhd body.
fn time(b: &[u8]) -> (u32, u64) {
    if b[0] == 1 {
        (be32(b, 20), be64(b, 24))
    } else {
        (be32(b, 12), u64::from(be32(b, 16)))
    }
}

fn make(spec: &Spec, damage: Damage) -> (Vec<u8>, Written, Vec<Node>) {
    let mut file = Vec::new();
    let written = write(spec, damage, &mut file).unwrap();
    assert_eq!(written.bytes, file.len() as u64);
    let truncated = damage == Damage::TruncatedMdat;
    let nodes = parse(&file, 0, file.len(), truncated);
    (file, written, nodes)
}

fn spec(rate: u32, channels: u16, ms: u64, layout: Layout) -> Spec {
    Spec {
        sample_rate: rate,
        channels,
        duration_ms: ms,
        layout,
        signal: Signal::Sine {
            hz: 440.0,
            amplitude: 0.5,
        },
    }
}

const MATRIX_SPECS: [(u32, u16, u64); 6] = [
    (8_000, 1, 1_000),
    (44_100, 2, 2_000),
    (48_000, 6, 1_500),
    (96_000, 2, 1_000),
    (22_050, 1, 40),
    (11_025, 2, 1),
];

/// The PCM a valid file must hold, frame by frame.
fn expected_pcm(spec: &Spec, frames: u64) -> Vec<u8> {
    let mut g = Generator::new(spec.signal, spec.sample_rate, spec.channels);
    let mut buf = vec![0u8; frames as usize * 2 * usize::from(spec.channels)];
    g.fill(&mut buf);
    buf
}

/// The track's bytes, gathered through the sample tables or the fragments.
fn gather(file: &[u8], nodes: &[Node]) -> Vec<u8> {
    let stbl = find(nodes, "moov/trak/mdia/minf/stbl").unwrap();
    let stsz = body(file, find(&stbl.children, "stsz").unwrap());
    let sample_size = be32(stsz, 4) as usize;
    let count = be32(stsz, 8) as usize;
    let mut out = Vec::new();
    if find(nodes, "moov/mvex").is_none() {
        let stsc = body(file, find(&stbl.children, "stsc").unwrap());
        let entries: Vec<(u32, u32)> = (0..be32(stsc, 4) as usize)
            .map(|i| (be32(stsc, 8 + 12 * i), be32(stsc, 12 + 12 * i)))
            .collect();
        let (wide, table) = match find(&stbl.children, "stco") {
            Some(n) => (false, body(file, n)),
            None => (true, body(file, find(&stbl.children, "co64").unwrap())),
        };
        let chunks = be32(table, 4) as usize;
        let mut left = count;
        for k in 0..chunks {
            let offset = if wide {
                be64(table, 8 + 8 * k)
            } else {
                u64::from(be32(table, 8 + 4 * k))
            } as usize;
            let per = entries
                .iter()
                .rev()
                .find(|(first, _)| *first as usize <= k + 1)
                .unwrap()
                .1 as usize;
            let n = per.min(left);
            out.extend_from_slice(&file[offset..offset + n * sample_size]);
            left -= n;
        }
        assert_eq!(left, 0, "the chunks hold every sample");
    } else {
        assert_eq!(count, 0);
        let mut decode_time = 0u64;
        let mut sequence = 0;
        for (i, moof) in nodes.iter().enumerate().filter(|(_, n)| &n.kind == b"moof") {
            let mfhd = body(file, find(&moof.children, "mfhd").unwrap());
            assert!(be32(mfhd, 4) > sequence);
            sequence = be32(mfhd, 4);
            let traf = find(&moof.children, "traf").unwrap();
            let tfhd = body(file, find(&traf.children, "tfhd").unwrap());
            assert_eq!(be32(tfhd, 0) & 0xff_ffff, 0x02_0038);
            let size = be32(tfhd, 12) as usize;
            let tfdt = body(file, find(&traf.children, "tfdt").unwrap());
            assert_eq!(be64(tfdt, 4), decode_time);
            let trun = body(file, find(&traf.children, "trun").unwrap());
            let n = be32(trun, 4) as usize;
            let data = moof.start + be32(trun, 8) as usize;
            let mdat = &nodes[i + 1];
            assert_eq!(&mdat.kind, b"mdat");
            assert_eq!(
                data,
                mdat.start + mdat.header,
                "trun data offset → mdat payload"
            );
            assert_eq!(mdat.size as usize - mdat.header, n * size);
            out.extend_from_slice(&file[data..data + n * size]);
            decode_time += n as u64 * u64::from(be32(tfhd, 8));
        }
    }
    out
}

#[test]
fn valid_files_add_up_in_every_layout() {
    for layout in [Layout::MoovFirst, Layout::MoovLast, Layout::Fragmented] {
        for (rate, channels, ms) in MATRIX_SPECS {
            let spec = spec(rate, channels, ms, layout);
            let (file, written, nodes) = make(&spec, Damage::None);
            let frames = ms * u64::from(rate) / 1000;
            assert_eq!(written.frames, frames);
            let top: Vec<&[u8; 4]> = nodes.iter().map(|n| &n.kind).collect();
            match layout {
                Layout::MoovFirst => assert_eq!(top, [b"ftyp", b"moov", b"mdat"]),
                Layout::MoovLast => assert_eq!(top, [b"ftyp", b"mdat", b"moov"]),
                Layout::Fragmented => {
                    assert_eq!(top[..2], [b"ftyp", b"moov"]);
                    let pairs = frames.div_ceil(u64::from(rate)) as usize;
                    assert_eq!(top.len(), 2 + 2 * pairs);
                }
            }
            let (ts, d) = time(body(&file, find(&nodes, "moov/mvhd").unwrap()));
            assert_eq!((ts, d), (rate, frames));
            let (ts, d) = time(body(&file, find(&nodes, "moov/trak/mdia/mdhd").unwrap()));
            assert_eq!((ts, d), (rate, frames));
            assert_eq!(
                written.duration_ms,
                (frames * 1000 + u64::from(rate) / 2) / u64::from(rate)
            );
            let hdlr = body(&file, find(&nodes, "moov/trak/mdia/hdlr").unwrap());
            assert_eq!(&hdlr[8..12], b"soun");
            let stsd = body(
                &file,
                find(&nodes, "moov/trak/mdia/minf/stbl/stsd").unwrap(),
            );
            let entry = &stsd[12..16];
            let want: &[u8] = if channels <= 2 && rate <= 65535 {
                b"sowt"
            } else {
                b"lpcm"
            };
            assert_eq!(entry, want);
            assert_eq!(&written.sample_entry, want);
            let pcm = gather(&file, &nodes);
            assert_eq!(pcm, expected_pcm(&spec, frames), "{spec:?}");
        }
    }
}

#[test]
fn the_sample_tables_describe_chunks_of_4096_frames() {
    let spec = spec(44_100, 2, 2_000, Layout::MoovFirst);
    let (file, _, nodes) = make(&spec, Damage::None);
    let stbl = find(&nodes, "moov/trak/mdia/minf/stbl").unwrap();
    let stts = body(&file, find(&stbl.children, "stts").unwrap());
    assert_eq!(
        (be32(stts, 4), be32(stts, 8), be32(stts, 12)),
        (1, 88_200, 1)
    );
    let stsz = body(&file, find(&stbl.children, "stsz").unwrap());
    assert_eq!((be32(stsz, 4), be32(stsz, 8)), (4, 88_200));
    let stsc = body(&file, find(&stbl.children, "stsc").unwrap());
    // 88200 = 21 * 4096 + 2184.
    let entries: Vec<u32> = (0..7).map(|i| be32(stsc, 4 + 4 * i)).collect();
    assert_eq!(entries, [2, 1, 4096, 1, 22, 2184, 1]);
    let stco = body(&file, find(&stbl.children, "stco").unwrap());
    assert_eq!(be32(stco, 4), 22);
    let mdat = find(&nodes, "mdat").unwrap();
    assert_eq!(be32(stco, 8) as usize, mdat.start + mdat.header);
    let last = be32(stco, 8 + 4 * 21) as usize;
    assert_eq!(last + 2184 * 4, mdat.start + mdat.size as usize);
    // The sample entry: sowt v0, 2 channels, 16 bits, 44100 in 16.16.
    let stsd = body(&file, find(&stbl.children, "stsd").unwrap());
    let e = &stsd[8..];
    assert_eq!(be32(e, 0), 36);
    assert_eq!(&e[16..18], &[0, 0]); // version 0
    assert_eq!(&e[24..28], &[0, 2, 0, 16]);
    assert_eq!(be32(e, 32), 44_100 << 16);
}

#[test]
fn lpcm_v2_carries_rate_channels_and_a_5_1_layout() {
    let (file, written, nodes) = make(&spec(48_000, 6, 10, Layout::MoovFirst), Damage::None);
    assert_eq!(&written.sample_entry, b"lpcm");
    let stsd = body(
        &file,
        find(&nodes, "moov/trak/mdia/minf/stbl/stsd").unwrap(),
    );
    let e = &stsd[8..];
    assert_eq!(&e[4..8], b"lpcm");
    assert_eq!(&e[16..18], &[0, 2]); // version 2
    assert_eq!(be32(e, 36), 72);
    assert_eq!(f64::from_bits(be64(e, 40)), 48_000.0);
    assert_eq!(be32(e, 48), 6);
    assert_eq!(be32(e, 52), 0x7f00_0000);
    assert_eq!(
        (be32(e, 56), be32(e, 60), be32(e, 64), be32(e, 68)),
        (16, 12, 12, 1)
    );
    assert_eq!(&e[76..80], b"chan");
    assert_eq!(be32(e, 84), (121 << 16) | 6);
    let stsz = body(
        &file,
        find(&nodes, "moov/trak/mdia/minf/stbl/stsz").unwrap(),
    );
    assert_eq!(be32(stsz, 4), 12);
}

#[test]
fn channels_differ_and_signals_are_what_they_say() {
    let pcm = |signal, channels| {
        let spec = Spec {
            signal,
            ..spec(8_000, channels, 100, Layout::MoovFirst)
        };
        let mut file = Vec::new();
        write(&spec, Damage::None, &mut file).unwrap();
        let data = file.len() - 800 * 2 * usize::from(channels);
        file[data..]
            .chunks_exact(2)
            .map(|s| i16::from_le_bytes([s[0], s[1]]))
            .collect::<Vec<i16>>()
    };
    let sine = pcm(
        Signal::Sine {
            hz: 1_000.0,
            amplitude: 1.0,
        },
        2,
    );
    assert_eq!(sine[0], 0);
    // 1 kHz at 8 kHz: frame 2 is a quarter period, the peak.
    assert_eq!(sine[4], 32767);
    assert_ne!(
        sine[2..100].iter().step_by(2).collect::<Vec<_>>(),
        sine[3..101].iter().step_by(2).collect::<Vec<_>>()
    );
    assert!(pcm(Signal::Silence, 1).iter().all(|&s| s == 0));
    let noise = pcm(Signal::Noise { seed: 7 }, 1);
    assert!(noise.iter().all(|&s| s.unsigned_abs() <= 16_384));
    assert!(noise.iter().filter(|&&s| s > 0).count() > 300);
    assert_eq!(noise, pcm(Signal::Noise { seed: 7 }, 1));
    assert_ne!(noise, pcm(Signal::Noise { seed: 8 }, 1));
}

#[test]
fn chunking_does_not_change_the_signal() {
    let spec = Spec {
        signal: Signal::Noise { seed: 3 },
        ..spec(8_000, 2, 3_000, Layout::MoovFirst)
    };
    let (file, _, nodes) = make(&spec, Damage::None);
    let (frag, _, frag_nodes) = make(
        &Spec {
            layout: Layout::Fragmented,
            ..spec
        },
        Damage::None,
    );
    assert_eq!(gather(&file, &nodes), gather(&frag, &frag_nodes));
}

#[test]
fn fragmented_files_declare_their_duration_in_mehd_and_trex() {
    let (file, written, nodes) = make(&spec(44_100, 2, 2_500, Layout::Fragmented), Damage::None);
    assert_eq!(written.frames, 110_250);
    let mehd = body(&file, find(&nodes, "moov/mvex/mehd").unwrap());
    assert_eq!(be32(mehd, 4), 110_250);
    let trex = body(&file, find(&nodes, "moov/mvex/trex").unwrap());
    assert_eq!((be32(trex, 4), be32(trex, 12), be32(trex, 16)), (1, 1, 4));
    let ftyp = body(&file, find(&nodes, "ftyp").unwrap());
    assert_eq!(&ftyp[..4], b"iso6");
}

#[test]
fn truncated_files_end_inside_the_mdat() {
    for layout in [Layout::MoovFirst, Layout::MoovLast, Layout::Fragmented] {
        let spec = spec(8_000, 2, 1_000, layout);
        let (_, whole, _) = make(&spec, Damage::None);
        let (file, written, nodes) = make(&spec, Damage::TruncatedMdat);
        let last = nodes.last().unwrap();
        assert_eq!(&last.kind, b"mdat", "{layout:?}");
        assert!(last.start as u64 + last.size > file.len() as u64);
        assert_eq!(written.duration_ms, 1_000);
        match layout {
            Layout::MoovLast => {
                assert_eq!(written.frames, 0);
                assert!(find(&nodes, "moov").is_none());
                // ftyp + mdat header + 4000 frames and a half.
                assert_eq!(file.len(), 20 + 8 + 4000 * 4 + 2);
            }
            _ => {
                assert_eq!(written.frames, 4_000);
                // Half the audio and half a frame short of the whole file.
                assert_eq!(whole.bytes - written.bytes, 4_000 * 4 - 2);
            }
        }
    }
}

#[test]
fn garbage_in_the_sample_table_is_in_stsc_only() {
    for layout in [Layout::MoovFirst, Layout::MoovLast, Layout::Fragmented] {
        let spec = spec(8_000, 1, 500, layout);
        let (good, _, _) = make(&spec, Damage::None);
        let (file, written, nodes) = make(&spec, Damage::GarbageInSampleTable);
        assert_eq!(written.frames, 0);
        let stsc = find(&nodes, "moov/trak/mdia/minf/stbl/stsc").unwrap();
        assert_eq!(be32(body(&file, stsc), 4), 0xdead_beef);
        let diff: Vec<usize> = (0..file.len()).filter(|&i| file[i] != good[i]).collect();
        assert!(
            diff.len() <= 4
                && diff
                    .iter()
                    .all(|&i| i >= stsc.start + 12 && i < stsc.start + 16)
        );
    }
}

#[test]
fn no_audio_track_is_one_video_track() {
    for layout in [Layout::MoovFirst, Layout::MoovLast, Layout::Fragmented] {
        let (file, written, nodes) = make(&spec(44_100, 2, 1_500, layout), Damage::NoAudioTrack);
        assert_eq!((written.frames, written.duration_ms), (0, 1_500));
        assert_eq!(&written.sample_entry, b"2vuy");
        let moov = find(&nodes, "moov").unwrap();
        assert_eq!(
            moov.children.iter().filter(|n| &n.kind == b"trak").count(),
            1
        );
        let hdlr = body(&file, find(&nodes, "moov/trak/mdia/hdlr").unwrap());
        assert_eq!(&hdlr[8..12], b"vide");
        assert!(find(&nodes, "moov/trak/mdia/minf/vmhd").is_some());
        let (ts, d) = time(body(&file, find(&nodes, "moov/trak/mdia/mdhd").unwrap()));
        assert_eq!((ts, d), (1000, 1500));
        assert_eq!(gather(&file, &nodes), [0x80, 0x10].repeat(256));
    }
}

#[test]
fn unsupported_codec_is_an_ac3_entry() {
    for layout in [Layout::MoovFirst, Layout::MoovLast, Layout::Fragmented] {
        let (file, written, nodes) =
            make(&spec(48_000, 2, 1_000, layout), Damage::UnsupportedCodec);
        assert_eq!(written.frames, 0);
        assert_eq!(&written.sample_entry, b"ac-3");
        // 32 samples of 1536 frames.
        assert_eq!(written.duration_ms, 1_024);
        let stsd = body(
            &file,
            find(&nodes, "moov/trak/mdia/minf/stbl/stsd").unwrap(),
        );
        assert_eq!(&stsd[12..16], b"ac-3");
        assert_eq!(&stsd[8 + 36 + 4..8 + 36 + 8], b"dac3");
        let data = gather(&file, &nodes);
        assert_eq!(data.len(), 32 * 768);
        assert!(
            !data.windows(2).any(|w| w == [0x0b, 0x77]),
            "no AC-3 sync word"
        );
    }
}

#[test]
fn specs_outside_the_limits_are_refused() {
    let bad = [
        spec(7_999, 1, 10, Layout::MoovFirst),
        spec(96_001, 1, 10, Layout::MoovFirst),
        spec(8_000, 0, 10, Layout::MoovFirst),
        spec(8_000, 9, 10, Layout::MoovFirst),
        spec(8_000, 1, 0, Layout::MoovFirst),
        // 2^32 frames and more need fragments.
        spec(96_000, 1, 44_739_243, Layout::MoovLast),
    ];
    for s in bad {
        let mut out = Vec::new();
        let err = write(&s, Damage::None, &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{s:?}");
        assert!(out.is_empty());
    }
}

#[test]
fn one_millisecond_is_a_few_frames() {
    let (_, written, _) = make(&spec(22_050, 1, 1, Layout::MoovFirst), Damage::None);
    assert_eq!((written.frames, written.duration_ms), (22, 1));
}

/// Keeps the first `keep` bytes, counts the rest.
struct Head {
    keep: usize,
    bytes: Vec<u8>,
    total: u64,
}

impl Write for Head {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.keep.saturating_sub(self.bytes.len()).min(buf.len());
        self.bytes.extend_from_slice(&buf[..room]);
        self.total += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// 80 minutes of 96 kHz 5.1 (5.5 GB, silence so it is quick): `co64` and a 64-bit
/// mdat. (An hour is 4.15 GB: still 32-bit offsets.)
#[test]
fn past_4_gib_offsets_are_64_bit() {
    let spec = Spec {
        signal: Signal::Silence,
        ..spec(96_000, 6, 4_800_000, Layout::MoovFirst)
    };
    let mut out = Head {
        keep: 2 << 20,
        bytes: Vec::new(),
        total: 0,
    };
    let written = write(&spec, Damage::None, &mut out).unwrap();
    let frames = 96_000 * 4_800u64;
    assert_eq!(written.frames, frames);
    assert_eq!(written.bytes, out.total);
    let file = &out.bytes;
    let moov_size = be32(file, 20) as usize + 20;
    let nodes = parse(file, 0, moov_size, false);
    let stbl = find(&nodes, "moov/trak/mdia/minf/stbl").unwrap();
    assert!(find(&stbl.children, "stco").is_none());
    let co64 = body(file, find(&stbl.children, "co64").unwrap());
    let chunks = frames.div_ceil(4096);
    assert_eq!(u64::from(be32(co64, 4)), chunks);
    // The mdat: a 64-bit size right after the moov.
    assert_eq!(be32(file, moov_size), 1);
    assert_eq!(&file[moov_size + 4..moov_size + 8], b"mdat");
    let mdat_size = be64(file, moov_size + 8);
    assert_eq!(mdat_size, 16 + frames * 12);
    assert_eq!(moov_size as u64 + mdat_size, out.total);
    let first = be64(co64, 8);
    assert_eq!(first, moov_size as u64 + 16);
    let last = be64(co64, 8 + 8 * (chunks as usize - 1));
    assert_eq!(last, first + (chunks - 1) * 4096 * 12);
    assert!(last > u64::from(u32::MAX));
}
