//! A minimal ID3v2.4 writer: text frames (UTF-8) and one front-cover `APIC`.

use crate::mp4::Tags;

/// Serialises `tags` as an ID3v2.4 tag, or returns `None` when there is nothing to write.
pub(crate) fn encode(tags: &Tags) -> Option<Vec<u8>> {
    let mut frames = Vec::new();
    for (id, value) in [
        (b"TIT2", &tags.title),
        (b"TPE1", &tags.artist),
        (b"TALB", &tags.album),
        (b"TDRC", &tags.year),
    ] {
        if let Some(text) = value {
            let mut body = Vec::with_capacity(text.len() + 1);
            body.push(3); // UTF-8
            body.extend_from_slice(text.as_bytes());
            push_frame(&mut frames, id, &body);
        }
    }
    if let Some((mime, data)) = &tags.cover {
        let mut body = Vec::with_capacity(data.len() + mime.len() + 4);
        body.push(3);
        body.extend_from_slice(mime.as_bytes());
        body.push(0);
        body.push(3); // picture type: front cover
        body.push(0); // empty description
        body.extend_from_slice(data);
        push_frame(&mut frames, b"APIC", &body);
    }
    if frames.is_empty() {
        return None;
    }
    let mut tag = Vec::with_capacity(frames.len() + 10);
    tag.extend_from_slice(b"ID3\x04\x00\x00");
    tag.extend_from_slice(&syncsafe(frames.len() as u32));
    tag.extend_from_slice(&frames);
    Some(tag)
}

fn push_frame(out: &mut Vec<u8>, id: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(id);
    out.extend_from_slice(&syncsafe(body.len() as u32));
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(body);
}

/// 28 bits as four 7-bit bytes. Frame bodies are capped far below 2^28 by
/// `mp4::MAX_COVER_BYTES`.
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

    #[test]
    fn empty_tags_write_nothing() {
        assert_eq!(encode(&Tags::default()), None);
    }

    #[test]
    fn title_frame_layout() {
        let tags = Tags {
            title: Some("Hi".into()),
            ..Tags::default()
        };
        let tag = encode(&tags).unwrap();
        assert_eq!(&tag[..10], b"ID3\x04\x00\x00\x00\x00\x00\x0d");
        assert_eq!(&tag[10..], b"TIT2\x00\x00\x00\x03\x00\x00\x03Hi");
    }

    #[test]
    fn syncsafe_sizes() {
        assert_eq!(syncsafe(0x80), [0, 0, 1, 0]);
    }
}
