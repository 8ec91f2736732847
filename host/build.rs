include!("build_components.rs");

fn main() {
    let dir = build_components(&["tapedeck-converter"], &["components/converter", "wit"]);
    println!(
        "cargo:rustc-env=TAPEDECK_DEFAULT_CONVERTER_WASM={}",
        component_path(&dir, "tapedeck-converter").display()
    );
}
