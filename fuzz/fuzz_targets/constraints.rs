#![no_main]

use libfuzzer_sys::fuzz_target;

// The body is shared with the stable replay test, so the two cannot drift.
fuzz_target!(|data: &[u8]| groupcall_sfu::fuzz::constraints(data));
