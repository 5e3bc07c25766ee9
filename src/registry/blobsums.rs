//! Where each layer's blobs are known to live: Docker's distribution
//! metadata (`distribution/v2metadata-by-diffid` in moby), for lamina.
//!
//! ```text
//! <root>/distribution/                 0700, made on first use
//! <root>/distribution/<diff-id hex>.json   [{digest, size, mediaType, source}, ...]
//! ```
//!
//! A pull records, for every layer, the compressed blob it came as and the
//! `host/repository` it came from; a push records what it uploaded, mounted
//! or found there. A later push reads them to skip (HEAD) or mount
//! (`?mount=&from=`) a blob rather than upload it again. The records are
//! a cache: each is replaced whole by rename (a reader sees one version),
//! two writers at once may lose one's addition (a later push then uploads
//! a blob it could have skipped: never a wrong result, since every blob
//! is checked against the registry before it is reused), and a missing or
//! unreadable record reads as empty.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::layout::DIR_MODE;
use crate::graph::Graph;
use crate::ids;

/// Most blobs kept per diff ID, newest first (moby keeps 50 per layer).
const KEEP: usize = 50;

/// A blob known for a diff ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blobsum {
    /// The blob's digest (of its compressed bytes).
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type (which compression).
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `host/repository` it is in, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

fn dir(g: &Graph) -> PathBuf {
    g.root().join("distribution")
}

fn file_name(diff_id: &str) -> Option<String> {
    let hex = diff_id.strip_prefix(ids::SHA256_PREFIX)?;
    ids::is_hex64(hex).then(|| format!("{hex}.json"))
}

/// The blobs known for `diff_id`, newest first.
pub fn recall(g: &Graph, diff_id: &str) -> Vec<Blobsum> {
    let Some(name) = file_name(diff_id) else {
        return Vec::new();
    };
    match crate::fs::private::read(&dir(g).join(name)) {
        Ok(Some(data)) => serde_json::from_slice(&data).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Record that `diff_id` is the blob `b`.
pub fn remember(g: &Graph, diff_id: &str, b: Blobsum) -> Result<()> {
    let Some(name) = file_name(diff_id) else {
        return Ok(());
    };
    let d = dir(g);
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(&d) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("mkdir", &d, e)),
    }
    let mut list = recall(g, diff_id);
    if list.first() == Some(&b) {
        return Ok(());
    }
    list.retain(|x| x != &b);
    list.insert(0, b);
    list.truncate(KEEP);
    let data = serde_json::to_vec(&list).expect("blobsums always encode");
    // A cache: atomic, not durable (see the module docs).
    crate::fs::private::write_replace(&d, &name, &data, 0o600, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(d: &str, source: &str) -> Blobsum {
        Blobsum {
            digest: d.to_owned(),
            size: 1,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
            source: Some(source.to_owned()),
        }
    }

    #[test]
    fn newest_first_without_repeats() {
        let tmp = tempfile::tempdir().unwrap();
        let g = Graph::open(&tmp.path().join("s"), "vfs").unwrap();
        let id = format!("sha256:{}", "a".repeat(64));
        assert_eq!(recall(&g, &id), vec![]);
        remember(&g, &id, sum("sha256:1", "h/a")).unwrap();
        remember(&g, &id, sum("sha256:2", "h/b")).unwrap();
        remember(&g, &id, sum("sha256:1", "h/a")).unwrap();
        let got: Vec<_> = recall(&g, &id).into_iter().map(|b| b.digest).collect();
        assert_eq!(got, ["sha256:1", "sha256:2"]);
        // Not a diff ID: nothing written, nothing read.
        remember(&g, "../x", sum("sha256:3", "h/c")).unwrap();
        assert_eq!(recall(&g, "../x"), vec![]);
    }
}
