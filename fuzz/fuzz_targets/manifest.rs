#![no_main]
//! Fuzz target: [`bosun::fuzzing::manifest`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| bosun::fuzzing::manifest(data));
