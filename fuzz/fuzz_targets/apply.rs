//! The tar applier: any input, applied onto an empty directory (plain,
//! gzip or zstd by magic bytes), must not panic, and after every run
//! nothing outside the destination may have changed (the containment check,
//! not only "no crash").
#![no_main]

use std::sync::OnceLock;

use lamina::{apply_layer, ApplyOptions};
use lamina_fuzz::Sandbox;
use libfuzzer_sys::fuzz_target;

static SANDBOX: OnceLock<Sandbox> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let sb = SANDBOX.get_or_init(|| Sandbox::new("apply"));
    let dst = sb.dst("dst");
    let opts = ApplyOptions {
        memory_limit: Some(64 << 20),
        ..Default::default()
    };
    let _ = apply_layer(&dst, data, &opts);
    sb.check_contained(&["dst"]);
});
