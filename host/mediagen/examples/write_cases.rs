//! Writes every test case to a directory, for looking at with ffprobe/ffmpeg:
//! `cargo run -p tapedeck-mediagen --example write_cases -- /tmp/cases`.

#[path = "../tests/cases/mod.rs"]
mod cases;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mediagen-cases".into());
    std::fs::create_dir_all(&dir)?;
    for case in cases::cases() {
        let path = std::path::Path::new(&dir).join(format!("{}.mov", case.name));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let written = tapedeck_mediagen::write(&case.spec, case.damage, &mut file)?;
        println!(
            "{}: {} bytes, {} frames, {} ms declared, {}",
            path.display(),
            written.bytes,
            written.frames,
            written.duration_ms,
            String::from_utf8_lossy(&written.sample_entry)
        );
    }
    Ok(())
}
