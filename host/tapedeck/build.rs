include!("../build_components.rs");

fn main() {
    // An explicit path skips the nested build of the converter (used while it is being
    // rewritten, or to embed a different default converter). The hostile test guest is
    // not built here: only the tests crate (tests/build.rs) builds it.
    println!("cargo:rerun-if-env-changed=TAPEDECK_CONVERTER_WASM");
    let converter_override =
        std::env::var_os("TAPEDECK_CONVERTER_WASM").map(std::path::PathBuf::from);
    let mut packages = vec!["tapedeck-notifier", "tapedeck-auth"];
    let mut watch = vec!["components/notifier", "components/auth", "wit"];
    if converter_override.is_none() {
        packages.push("tapedeck-converter-component");
        watch.push("components/converter");
    }
    let dir = build_components(&packages, &watch);
    let converter =
        converter_override.unwrap_or_else(|| component_path(&dir, "tapedeck-converter-component"));
    println!("cargo:rerun-if-changed={}", converter.display());
    println!(
        "cargo:rustc-env=TAPEDECK_DEFAULT_CONVERTER_WASM={}",
        converter.display()
    );
    let auth = component_path(&dir, "tapedeck-auth");
    println!(
        "cargo:rustc-env=TAPEDECK_DEFAULT_AUTH_WASM={}",
        auth.display()
    );
    let notifier = component_path(&dir, "tapedeck-notifier");
    println!(
        "cargo:rustc-env=TAPEDECK_DEFAULT_NOTIFIER_WASM={}",
        notifier.display()
    );
}
