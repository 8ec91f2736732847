//! Decodes an MP3 with symphonia's decoder, honouring the LAME tag's delay and padding,
//! and prints `frames rate channels peak`: a second opinion beside ffmpeg's.
//! `cargo run --release -p tapedeck-converter --example decode_mp3 -- FILE.mp3`

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};

fn main() {
    let path = std::env::args().nth(1).expect("an MP3 path");
    let mut bytes = std::fs::read(&path).expect("readable");
    // Skip an ID3v2 tag: the MP3 reader starts at the first frame.
    if bytes.starts_with(b"ID3") && bytes.len() >= 10 {
        let size = bytes[6..10]
            .iter()
            .fold(0usize, |a, &b| (a << 7) | (b & 0x7f) as usize);
        bytes.drain(..(10 + size).min(bytes.len()));
    }
    let mss = MediaSourceStream::new(
        Box::new(std::io::Cursor::new(bytes)),
        MediaSourceStreamOptions::default(),
    );
    let mut reader = symphonia::default::formats::MpaReader::try_new(mss, FormatOptions::default())
        .expect("an MP3 stream");
    let Some(CodecParameters::Audio(params)) = reader.tracks()[0].codec_params.clone() else {
        panic!("no audio")
    };
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .expect("a decoder");
    let (mut frames, mut peak) = (0u64, 0f32);
    let mut planes: Vec<Vec<f32>> = Vec::new();
    while let Some(packet) = reader.next_packet().expect("a packet") {
        // The decoder applies the packet's trim (the LAME tag's delay and padding).
        let buf = decoder.decode(&packet).expect("decodes");
        buf.copy_to_vecs_planar::<f32>(&mut planes);
        for p in &planes {
            peak = p.iter().fold(peak, |m, s| m.max(s.abs()));
        }
        frames += buf.frames() as u64;
    }
    println!(
        "{frames} {} {} {peak}",
        params.sample_rate.unwrap_or(0),
        params.channels.map_or(0, |c| c.count())
    );
}
