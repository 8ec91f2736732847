//! `tapedeck_converter::fuzzing::convert` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tapedeck_converter::fuzzing::convert(data);
});
