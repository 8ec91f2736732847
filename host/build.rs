include!("build_components.rs");

fn main() {
    // An explicit path skips the nested build (used while a component is being rewritten,
    // or to embed a different default converter).
    println!("cargo:rerun-if-env-changed=TAPEDECK_CONVERTER_WASM");
    let converter = match std::env::var("TAPEDECK_CONVERTER_WASM") {
        Ok(path) => std::path::PathBuf::from(path),
        Err(_) => {
            let dir = build_components(&["tapedeck-converter"], &["components/converter", "wit"]);
            component_path(&dir, "tapedeck-converter")
        }
    };
    println!("cargo:rerun-if-changed={}", converter.display());
    println!("cargo:rustc-env=TAPEDECK_DEFAULT_CONVERTER_WASM={}", converter.display());
}
