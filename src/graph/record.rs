//! A layer's metadata record, `layers/<id>/layer.json`.
//!
//! What Docker 1.8 kept in an image's `json` plus `layersize`, and what
//! containers/storage keeps per layer in `layers.json`: the graph owns this
//! file; drivers never parse it (their own state lives in the opaque
//! `driver` map or in their own files).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::time::Timestamp;
use crate::ids;

/// The most a layer's user metadata may hold, as compact JSON. Records are
/// read whole on every listing ([`crate::fs::private::READ_MAX`]), so a
/// bigger one is refused before anything is written, not found unreadable
/// later; bulk data belongs in a file beside the store.
pub const METADATA_MAX: usize = 1 << 20;

/// Refuse metadata over [`METADATA_MAX`]; called before a layer is made,
/// so nothing is applied or written for a record that could not be kept.
pub fn check_metadata(m: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let size = serde_json::to_vec(m).map_or(0, |m| m.len());
    if size > METADATA_MAX {
        return Err(Error::InvalidArgument(format!(
            "metadata is {size} bytes as JSON; the limit is {METADATA_MAX}"
        )));
    }
    Ok(())
}

/// One layer's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The layer id (also its directory's name).
    pub id: String,
    /// The parent layer's id; `None` for a base layer.
    #[serde(default)]
    pub parent: Option<String>,
    /// When the layer was made, RFC 3339 UTC with nanoseconds.
    pub created: Timestamp,
    /// `sha256:<hex>` of the uncompressed tar; `None` for a writable layer.
    #[serde(default)]
    pub diff_id: Option<String>,
    /// The OCI chain id; `None` for a writable layer.
    #[serde(default)]
    pub chain_id: Option<String>,
    /// The seed's size: the sum of the header sizes of the layer tar's
    /// entries, i.e. the content bytes of its files (`UnpackLayer`'s return
    /// value, saved by Docker 1.8's `storeImage` and shown by `docker
    /// images`). 0 for a writable layer.
    #[serde(default)]
    pub size: u64,
    /// Bytes of the uncompressed layer tar; `None` for a writable layer.
    #[serde(default)]
    pub tar_size: Option<u64>,
    /// Whether the layer is a container's writable layer.
    #[serde(default)]
    pub writable: bool,
    /// The user's metadata, any JSON object.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The driver's own facts about the layer, opaque to the graph.
    #[serde(default)]
    pub driver: BTreeMap<String, String>,
    /// For a container made from an image: that image's manifest digest,
    /// whose config `commit_image` inherits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl LayerRecord {
    /// A record for layer `id` on `parent`, created now, with everything
    /// else empty.
    pub fn new(id: &str, parent: Option<&str>, writable: bool) -> LayerRecord {
        LayerRecord {
            id: id.to_owned(),
            parent: parent.map(str::to_owned),
            created: Timestamp::now(),
            diff_id: None,
            chain_id: None,
            size: 0,
            tar_size: None,
            writable,
            metadata: serde_json::Map::new(),
            driver: BTreeMap::new(),
            image: None,
        }
    }

    /// Check the ids and digests in the record, so a hand-edited or
    /// corrupted `layer.json` cannot make the graph build a path from a
    /// bad parent id.
    pub fn validate(&self) -> Result<()> {
        ids::validate_id(&self.id)?;
        if let Some(p) = &self.parent {
            ids::validate_id(p)?;
            if p == &self.id {
                return Err(Error::InvalidArgument(format!(
                    "layer {} is its own parent",
                    self.id
                )));
            }
        }
        for d in [&self.diff_id, &self.chain_id, &self.image]
            .into_iter()
            .flatten()
        {
            ids::validate_digest(d)?;
        }
        Ok(())
    }

    /// The record as the bytes of `layer.json`. What would not read back
    /// (metadata nested deeper than the JSON reader's recursion limit) is
    /// refused here, at write time, not found unreadable later.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        check_metadata(&self.metadata)
            .map_err(|e| Error::InvalidArgument(format!("layer {}: {e}", self.id)))?;
        let mut v = serde_json::to_vec_pretty(self).map_err(|e| {
            Error::InvalidArgument(format!("layer {}: cannot encode metadata: {e}", self.id))
        })?;
        v.push(b'\n');
        if let Err(e) = serde_json::from_slice::<LayerRecord>(&v) {
            return Err(Error::InvalidArgument(format!(
                "layer {}: the metadata would not read back: {e}",
                self.id
            )));
        }
        Ok(v)
    }

    /// Parse and validate `layer.json` of the layer `id`; what does not
    /// is [`Error::Corrupt`] (the caller puts the file's path in it).
    pub fn from_json(id: &str, data: &[u8]) -> Result<LayerRecord> {
        let bad = |what: String| Error::corrupt(super::layout::LAYER_JSON, what);
        let rec: LayerRecord = serde_json::from_slice(data)
            .map_err(|e| bad(format!("layer {id}: unparsable record: {e}")))?;
        rec.validate()
            .map_err(|e| bad(format!("layer {id}: {e}")))?;
        if rec.id != id {
            return Err(bad(format!(
                "layer {id}: the record names layer {}",
                rec.id
            )));
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_validates() {
        let id = "1".repeat(64);
        let mut r = LayerRecord::new(&id, Some(&"2".repeat(64)), false);
        r.diff_id = Some(format!("sha256:{}", "3".repeat(64)));
        r.chain_id = Some(format!("sha256:{}", "4".repeat(64)));
        r.metadata
            .insert("k".into(), serde_json::json!({"nested": [1, 2]}));
        r.driver.insert("lower-id".into(), "2".repeat(64));
        let back = LayerRecord::from_json(&id, &r.to_json().unwrap()).unwrap();
        let mut big = r.clone();
        big.metadata
            .insert("k".into(), "x".repeat(METADATA_MAX).into());
        assert!(matches!(big.to_json(), Err(Error::InvalidArgument(_))));
        big.metadata
            .insert("k".into(), "x".repeat(METADATA_MAX - 16).into());
        assert!(big.to_json().is_ok());
        assert_eq!(back, r);
        assert!(LayerRecord::from_json(&"5".repeat(64), &r.to_json().unwrap()).is_err());

        let minimal = format!(r#"{{"id":"{id}","created":"2026-01-01T00:00:00Z","future":1}}"#);
        let m = LayerRecord::from_json(&id, minimal.as_bytes()).unwrap();
        assert_eq!(m.parent, None);
        assert!(!m.writable);

        let mut bad = r.clone();
        bad.parent = Some("../../etc".into());
        assert!(bad.validate().is_err());
        let mut bad = r;
        bad.diff_id = Some("md5:00".into());
        assert!(bad.validate().is_err());
    }
}
