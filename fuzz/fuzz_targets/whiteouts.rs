//! The whiteout converter, as a differential: a tar applied as an overlay
//! upper dir (whiteouts as 0/0 devices, opaque xattrs) and exported back to
//! AUFS form (`write_upper_diff`) must give, applied onto an empty tree, the
//! tree the tar gives applied directly (less the directories an upper dir
//! needs for whiteouts of paths only a lower has). Runs as root (0/0 devices and
//! trusted.* xattrs need it).
#![no_main]

use std::sync::OnceLock;

use lamina::archive::upper::write_upper_diff;
use lamina::archive::WhiteoutMode;
use lamina::{apply_layer, ApplyOptions, ExportOptions};
use lamina_fuzz::{manifest, Sandbox};
use libfuzzer_sys::fuzz_target;

static SANDBOX: OnceLock<Sandbox> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let sb = SANDBOX.get_or_init(|| Sandbox::new("whiteouts"));
    let direct = sb.dst("direct");
    let upper = sb.dst("upper");
    let lower = sb.dst("lower");
    let again = sb.dst("again");
    let overlay = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay,
        ..Default::default()
    };
    let a = apply_layer(&direct, data, &ApplyOptions::default());
    let b = apply_layer(&upper, data, &overlay);
    if let (Ok(_), Ok(_)) = (&a, &b) {
        let mut tar = Vec::new();
        if write_upper_diff(&upper, &lower, &mut tar, &ExportOptions::default()).is_ok() {
            apply_layer(&again, &tar[..], &ApplyOptions::default())
                .expect("lamina's own upper diff applies");
            let (x, y) = (manifest(&direct), manifest(&again));
            // Directory modes and the root's own metadata may differ
            // (implied parents); every path and every non-directory agree.
            let paths = |m: &std::collections::BTreeMap<std::path::PathBuf, lamina_fuzz::Node>| {
                m.iter()
                    .filter(|(p, n)| !p.as_os_str().is_empty() && n.kind != 0o040000)
                    .map(|(p, n)| (p.clone(), n.kind, n.size, n.link.clone(), n.data.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(paths(&x), paths(&y), "upper diff round trip differs");
            // Every path of the direct apply is there. An overlay upper dir
            // needs a directory for a whiteout to sit in where the layer
            // has none (the lower may have it; moby's overlay2 applier
            // makes it the same way): such implied directories may be
            // extra, holding nothing but directories.
            for p in x.keys() {
                assert!(y.contains_key(p), "{p:?} lost in the upper diff round trip");
            }
            for (p, n) in y.iter().filter(|(p, _)| !x.contains_key(*p)) {
                assert_eq!(
                    n.kind, 0o040000,
                    "{p:?} extra in the round trip, not a directory"
                );
                assert!(
                    y.iter()
                        .all(|(q, m)| !q.starts_with(p) || m.kind == 0o040000),
                    "{p:?} extra in the round trip, with files below"
                );
            }
        }
    }
    sb.check_contained(&["direct", "upper", "lower", "again"]);
});
