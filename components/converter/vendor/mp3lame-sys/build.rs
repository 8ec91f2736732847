//! Tapedeck: LAME compiled with `cc` from a fixed config.h (config/config.h) instead of
//! autotools. One build for every target: no configure run (it cost ~30 s per target
//! and guessed nothing useful for wasm32), the same flags natively and in wasm, and the
//! WebAssembly SIMD kernels (libmp3lame/vector/wasm_simd.c) when the target has simd128.

use std::path::Path;

const LAME: &str = "lame-3.100";
const SOURCES: &[&str] = &[
    "bitstream.c",
    "encoder.c",
    "fft.c",
    "gain_analysis.c",
    "id3tag.c",
    "lame.c",
    "mpglib_interface.c",
    "newmdct.c",
    "presets.c",
    "psymodel.c",
    "quantize.c",
    "quantize_pvt.c",
    "reservoir.c",
    "set_get.c",
    "tables.c",
    "takehiro.c",
    "util.c",
    "vbrquantize.c",
    "VbrTag.c",
    "version.c",
    "vector/wasm_simd.c",
];

fn main() {
    let lib = Path::new(LAME).join("libmp3lame");
    println!("cargo:rerun-if-changed={LAME}");
    println!("cargo:rerun-if-changed=config");

    let mut build = cc::Build::new();
    build
        .files(SOURCES.iter().map(|file| lib.join(file)))
        .include("config")
        .include(Path::new(LAME).join("include"))
        .include(&lib)
        .define("HAVE_CONFIG_H", None)
        .opt_level(3)
        // LAME's x86 configure builds with these; its float code is written for them.
        .flag_if_supported("-ffast-math")
        .flag_if_supported("-fno-math-errno")
        .warnings(false)
        .extra_warnings(false);
    build.compile("mp3lame");
}
