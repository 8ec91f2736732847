//! `tapedeck_converter::fuzzing::id3_writer` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tapedeck_converter::fuzzing::id3_writer(data);
});
