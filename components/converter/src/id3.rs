//! The ID3v2 tag before the audio, in version 2.4 (UTF-8 text) or 2.3 (UTF-16 text, what
//! older players and Windows read best): text frames, the date, comment, lyrics,
//! user-defined texts and every picture.
//!
//! v2.3 differs in what a reader sees: frame sizes are plain 32-bit numbers (v2.4:
//! syncsafe), text is UTF-16 with a byte order mark (v2.4: UTF-8), the date is `TYER`
//! (year) plus `TDAT` (day and month) and `TIME` (v2.4: one `TDRC` timestamp).
//! Unsynchronisation is never applied (no reader of either version needs it).

use crate::mp4::Tags;
use crate::options::Id3Version;

/// Text encoding byte: UTF-16 with BOM (v2.3) or UTF-8 (v2.4).
fn encoding(version: Id3Version) -> u8 {
    match version {
        Id3Version::V23 => 1,
        Id3Version::V24 => 3,
    }
}

/// `text` in the version's encoding, with its terminator when `terminated`.
fn encode_text(out: &mut Vec<u8>, version: Id3Version, text: &str, terminated: bool) {
    match version {
        Id3Version::V23 => {
            out.extend_from_slice(&[0xff, 0xfe]);
            for unit in text.encode_utf16() {
                out.extend_from_slice(&unit.to_le_bytes());
            }
            if terminated {
                out.extend_from_slice(&[0, 0]);
            }
        }
        Id3Version::V24 => {
            out.extend_from_slice(text.as_bytes());
            if terminated {
                out.push(0);
            }
        }
    }
}

/// Serialises `tags` as an ID3v2 tag of `version`, or returns `None` when there is
/// nothing to write.
pub(crate) fn encode(tags: &Tags, version: Id3Version) -> Option<Vec<u8>> {
    let mut frames = Vec::new();
    let text_frame = |frames: &mut Vec<u8>, id: &[u8; 4], text: &str| {
        let mut body = vec![encoding(version)];
        encode_text(&mut body, version, text, false);
        push_frame(frames, version, id, &body);
    };
    for (id, value) in &tags.text {
        text_frame(&mut frames, id, value);
    }
    if let Some(date) = &tags.date {
        match version {
            Id3Version::V24 => text_frame(&mut frames, b"TDRC", &timestamp(date)),
            Id3Version::V23 => {
                let b = date.as_bytes();
                text_frame(&mut frames, b"TYER", &date[..4]);
                // "2021-05-03T14:30": TDAT is DDMM, TIME is HHMM.
                let digits = |r: std::ops::Range<usize>| {
                    b.get(r.clone())
                        .filter(|d| d.iter().all(u8::is_ascii_digit))
                        .map(|_| &date[r])
                };
                if let (Some(month), Some(day)) = (digits(5..7), digits(8..10)) {
                    text_frame(&mut frames, b"TDAT", &format!("{day}{month}"));
                    if let (Some(h), Some(m)) = (digits(11..13), digits(14..16)) {
                        text_frame(&mut frames, b"TIME", &format!("{h}{m}"));
                    }
                }
            }
        }
    }
    for (id, text) in [(b"COMM", &tags.comment), (b"USLT", &tags.lyrics)] {
        if let Some(text) = text {
            // Encoding, language (undetermined), empty description, text.
            let mut body = vec![encoding(version)];
            body.extend_from_slice(b"und");
            encode_text(&mut body, version, "", true);
            encode_text(&mut body, version, text, false);
            push_frame(&mut frames, version, id, &body);
        }
    }
    for (name, value) in &tags.user {
        let mut body = vec![encoding(version)];
        encode_text(&mut body, version, name, true);
        encode_text(&mut body, version, value, false);
        push_frame(&mut frames, version, b"TXXX", &body);
    }
    for (i, (mime, data)) in tags.pictures.iter().enumerate() {
        let mut body = Vec::with_capacity(data.len() + mime.len() + 16);
        body.push(encoding(version));
        body.extend_from_slice(mime.as_bytes());
        body.push(0);
        // The first is the front cover; the others "other", each with its own
        // description (ID3 allows one APIC per description).
        let (kind, description) = if i == 0 {
            (3, String::new())
        } else {
            (0, format!("picture {}", i + 1))
        };
        body.push(kind);
        encode_text(&mut body, version, &description, true);
        body.extend_from_slice(data);
        push_frame(&mut frames, version, b"APIC", &body);
    }
    if frames.is_empty() {
        return None;
    }
    let major = match version {
        Id3Version::V23 => 3,
        Id3Version::V24 => 4,
    };
    let mut tag = Vec::with_capacity(frames.len() + 10);
    tag.extend_from_slice(&[b'I', b'D', b'3', major, 0, 0]);
    tag.extend_from_slice(&syncsafe(frames.len() as u32));
    tag.extend_from_slice(&frames);
    Some(tag)
}

/// `©day` as an ID3v2.4 timestamp: its leading `yyyy[-MM[-dd[THH[:mm[:ss]]]]]` part.
fn timestamp(date: &str) -> String {
    let b = date.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    let mut end = 4;
    for cut in [7, 10, 13, 16, 19] {
        let fits = b.len() >= cut
            && b[..cut].iter().zip(&shape[..cut]).all(|(&c, &s)| match s {
                b'd' => c.is_ascii_digit(),
                s => c == s,
            });
        if !fits {
            break;
        }
        end = cut;
    }
    date[..end].to_string()
}

fn push_frame(out: &mut Vec<u8>, version: Id3Version, id: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(id);
    let size = body.len() as u32;
    out.extend_from_slice(&match version {
        Id3Version::V23 => size.to_be_bytes(),
        Id3Version::V24 => syncsafe(size),
    });
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(body);
}

/// 28 bits as four 7-bit bytes. Tags are far below 2^28 bytes: everything in them comes
/// from the `moov`, which `mp4::MAX_MOOV_BYTES` caps at 16 MiB (v2.3's UTF-16 at most
/// doubles its text).
fn syncsafe(n: u32) -> [u8; 4] {
    [
        (n >> 21) as u8 & 0x7f,
        (n >> 14) as u8 & 0x7f,
        (n >> 7) as u8 & 0x7f,
        n as u8 & 0x7f,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titled(title: &str) -> Tags {
        Tags {
            text: vec![(*b"TIT2", title.into())],
            ..Tags::default()
        }
    }

    #[test]
    fn empty_tags_write_nothing() {
        assert_eq!(encode(&Tags::default(), Id3Version::V24), None);
        assert_eq!(encode(&Tags::default(), Id3Version::V23), None);
    }

    #[test]
    fn title_frame_layout() {
        let tag = encode(&titled("Hi"), Id3Version::V24).unwrap();
        assert_eq!(&tag[..10], b"ID3\x04\x00\x00\x00\x00\x00\x0d");
        assert_eq!(&tag[10..], b"TIT2\x00\x00\x00\x03\x00\x00\x03Hi");
        let tag = encode(&titled("Hi"), Id3Version::V23).unwrap();
        assert_eq!(&tag[..10], b"ID3\x03\x00\x00\x00\x00\x00\x11");
        assert_eq!(
            &tag[10..],
            b"TIT2\x00\x00\x00\x07\x00\x00\x01\xff\xfeH\x00i\x00"
        );
    }

    #[test]
    fn v23_frame_sizes_are_plain_and_v24_syncsafe() {
        let long = "x".repeat(200);
        let v24 = encode(&titled(&long), Id3Version::V24).unwrap();
        assert_eq!(&v24[14..18], &[0, 0, 1, 0x49]); // 201 = 0x80 + 0x49
        let v23 = encode(&titled(&long), Id3Version::V23).unwrap();
        assert_eq!(&v23[14..18], &403u32.to_be_bytes());
    }

    #[test]
    fn dates_become_tdrc_or_tyer_and_tdat() {
        let tags = Tags {
            date: Some("2021-05-03T14:30:00Z".into()),
            ..Tags::default()
        };
        let v24 = encode(&tags, Id3Version::V24).unwrap();
        assert!(v24.ends_with(b"TDRC\x00\x00\x00\x14\x00\x00\x032021-05-03T14:30:00"));
        let v23 = encode(&tags, Id3Version::V23).unwrap();
        let text = |s: &str| -> Vec<u8> {
            let mut v = vec![1, 0xff, 0xfe];
            v.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
            v
        };
        for (id, value) in [(b"TYER", "2021"), (b"TDAT", "0305"), (b"TIME", "1430")] {
            let mut frame = id.to_vec();
            frame.extend((text(value).len() as u32).to_be_bytes());
            frame.extend([0, 0]);
            frame.extend(text(value));
            assert!(v23.windows(frame.len()).any(|w| w == frame), "{value}");
        }
        assert_eq!(timestamp("1999"), "1999");
        assert_eq!(timestamp("1999-12"), "1999-12");
        assert_eq!(timestamp("1999-12-31 garbage"), "1999-12-31");
    }

    #[test]
    fn pictures_after_the_first_get_their_own_descriptions() {
        let tags = Tags {
            pictures: vec![
                ("image/jpeg".into(), vec![1, 2]),
                ("image/png".into(), vec![3]),
            ],
            ..Tags::default()
        };
        let tag = encode(&tags, Id3Version::V24).unwrap();
        let front = b"APIC\x00\x00\x00\x10\x00\x00\x03image/jpeg\x00\x03\x00\x01\x02";
        assert!(tag.windows(front.len()).any(|w| w == front));
        let other = b"image/png\x00\x00picture 2\x00\x03";
        assert!(tag.windows(other.len()).any(|w| w == other));
    }

    #[test]
    fn syncsafe_sizes() {
        assert_eq!(syncsafe(0x80), [0, 0, 1, 0]);
    }
}
