#![no_main]
//! Fuzz target: [`bosun::fuzzing::request`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| bosun::fuzzing::request(data));
