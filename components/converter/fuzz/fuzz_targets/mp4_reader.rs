//! `tapedeck_converter::fuzzing::mp4_reader` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tapedeck_converter::fuzzing::mp4_reader(data);
});
