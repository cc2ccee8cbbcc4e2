#![no_main]
//! See `subvol_fuzz::manifest_decode` (fuzz/src/lib.rs) for what this target checks.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| subvol_fuzz::manifest_decode(data));
