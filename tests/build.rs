include!("../host/build_components.rs");

/// The end-to-end tests serve the hostile guest as the service's converter: its path
/// reaches them as `TAPEDECK_HOSTILE_WASM`.
fn main() {
    let dir = build_components(
        &[
            "tapedeck-hostile-guest",
            "tapedeck-hostile-notifier",
            "tapedeck-converter-speech",
        ],
        &[
            "tests/guests/hostile",
            "tests/guests/hostile-notifier",
            "wit",
            "examples/plugins/converter-speech",
            "components/converter/src",
        ],
    );
    let hostile = component_path(&dir, "tapedeck-hostile-guest");
    println!(
        "cargo:rustc-env=TAPEDECK_SPEECH_WASM={}",
        component_path(&dir, "tapedeck-converter-speech").display()
    );
    println!(
        "cargo:rustc-env=TAPEDECK_HOSTILE_WASM={}",
        hostile.display()
    );
    println!(
        "cargo:rustc-env=TAPEDECK_HOSTILE_NOTIFIER_WASM={}",
        component_path(&dir, "tapedeck-hostile-notifier").display()
    );
}
