//! Converts one file natively, for experiments and fuzz-case triage:
//! `cargo run --release -p tapedeck-converter --example convert -- IN OUT [--bitrate K]
//! [--vbr Q] [--sample-rate HZ] [--mono] [--id3v23]`.

use tapedeck_converter::{
    FileSource, Id3Version, Mode, Observer, Options, VecSink, convert_observed,
};

struct Print;

impl Observer for Print {
    fn progress(&mut self, _: f32) {}
    fn warn(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(input), Some(output)) = (args.first(), args.get(1)) else {
        eprintln!(
            "usage: convert IN OUT [--bitrate K] [--vbr Q] [--sample-rate HZ] [--mono] [--id3v23]"
        );
        std::process::exit(2);
    };
    let mut options = Options::default();
    let mut rest = args[2..].iter();
    while let Some(arg) = rest.next() {
        let mut value = || -> u64 { rest.next().and_then(|v| v.parse().ok()).expect("a number") };
        match arg.as_str() {
            "--bitrate" => options.mode = Mode::Cbr(value() as u16),
            "--vbr" => options.mode = Mode::Vbr(value() as u8),
            "--sample-rate" => options.sample_rate = Some(value() as u32),
            "--mono" => options.mono = true,
            "--id3v23" => options.id3_version = Id3Version::V23,

            other => panic!("unknown argument {other}"),
        }
    }
    let mut source = FileSource::open(std::path::Path::new(input)).expect("input opens");
    let mut sink = VecSink::default();
    let started = std::time::Instant::now();
    match convert_observed(&mut source, &mut sink, &options, &mut Print) {
        Ok(summary) => {
            std::fs::write(output, &sink.bytes).expect("output written");
            eprintln!("{summary:?} in {:?}", started.elapsed());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
