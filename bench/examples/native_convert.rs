//! The converter compiled natively, on one file: for profiling it next to the wasm build
//! (`perf record target/release/examples/native_convert INPUT`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let input = std::env::args()
        .nth(1)
        .ok_or("usage: native_convert INPUT")?;
    let mut source = tapedeck_converter::FileSource::open(std::path::Path::new(&input))?;
    let mut sink = tapedeck_converter::VecSink::default();
    let options = tapedeck_converter::Options::default();
    let summary = tapedeck_converter::convert(&mut source, &mut sink, &options, &mut |_| {})?;
    eprintln!("{summary:?}");
    Ok(())
}
