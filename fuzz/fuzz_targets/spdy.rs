#![no_main]
//! Fuzz target: [`bosun::fuzzing::spdy`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| bosun::fuzzing::spdy(data));
