//! Writes the generated test inputs (`tapedeck_converter::testgen::inputs`) into a
//! directory: the fuzzers' seeds besides ../shared/media, and files to try by hand.
//! `cargo run --release -p tapedeck-converter --features testgen --example gen_inputs -- DIR`

fn main() {
    let dir = std::env::args().nth(1).expect("an output directory");
    std::fs::create_dir_all(&dir).expect("directory");
    for (name, bytes) in tapedeck_converter::testgen::inputs() {
        std::fs::write(std::path::Path::new(&dir).join(&name), &bytes).expect("written");
        println!("{name} ({} bytes)", bytes.len());
    }
}
