//! Exact reassembly: a plain tar that applies gives back, from its
//! tar-split record and the tree, the very bytes it came from — or an
//! error naming what changed (an entry replaced later in the same tar);
//! never other bytes, never a panic. A damaged record is refused too.
#![no_main]

use std::sync::OnceLock;

use lamina::archive::{apply_layer_with_record, reassemble};
use lamina::ApplyOptions;
use lamina_fuzz::Sandbox;
use libfuzzer_sys::fuzz_target;

static SANDBOX: OnceLock<Sandbox> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    // Plain tars only: the record describes the uncompressed stream.
    if data.starts_with(&[0x1f, 0x8b]) || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return;
    }
    let sb = SANDBOX.get_or_init(|| Sandbox::new("reassemble"));
    let dst = sb.dst("dst");
    let mut record = Vec::new();
    if apply_layer_with_record(&dst, data, &ApplyOptions::default(), &mut record).is_ok() {
        let mut out = Vec::new();
        if reassemble(&record[..], &dst, &mut out).is_ok() {
            assert!(out == data, "reassembled bytes differ from the input");
        }
        // A damaged record never gives other bytes either.
        if record.len() > 8 {
            let mut bad = record.clone();
            let i = data.len() % (bad.len() - 4) + 4;
            bad[i] ^= 0x55;
            let mut out = Vec::new();
            if reassemble(&bad[..], &dst, &mut out).is_ok() {
                assert!(out == data, "a damaged record gave other bytes");
            }
        }
    }
    sb.check_contained(&["dst"]);
});
