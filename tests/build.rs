include!("../host/build_components.rs");

/// The end-to-end tests serve the hostile guest as the service's converter: its path
/// reaches them as `TAPEDECK_HOSTILE_WASM`.
fn main() {
    let dir = build_components(
        &["tapedeck-hostile-guest"],
        &["tests/guests/hostile", "wit"],
    );
    let hostile = component_path(&dir, "tapedeck-hostile-guest");
    println!(
        "cargo:rustc-env=TAPEDECK_HOSTILE_WASM={}",
        hostile.display()
    );
}
