//! Images in the store: a name (`app:1`) for a chain of read-only layers,
//! with the image's config and manifest kept byte for byte.
//!
//! ```text
//! <root>/images/                     0700, made on first use
//! <root>/images/<sha256(name)>.json  one record per name (0600)
//! ```
//!
//! The file is named by the SHA-256 of the (validated, normalized) name,
//! so no name, however odd, ever becomes a path. A record holds the name,
//! the layer ids base to top, the manifest digest, and the exact bytes of
//! the image's config and manifest as they were loaded (JSON is UTF-8 text,
//! so the bytes are kept as strings), so a saved image keeps the digests it
//! came with wherever the bytes it points to are unchanged.
//!
//! Crash safety is the layers' (see [`crate::graph::layout`]): a record is
//! written whole into a staging directory under `tmp/`, fsynced, renamed
//! over `images/<hash>.json` and the directory fsynced, all under the
//! store lock (shared) after checking that every layer it names is in the
//! store; deleting a layer takes the lock exclusive and refuses a layer a
//! record names ([`Error::LayerInUse`]). A crash leaves the old record or
//! the new one, and garbage only under `tmp/`. Loading writes an image's
//! record after all its layers landed, so a crashed load leaves the whole
//! image or nothing named.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, IoContext, Result};
use crate::graph::graph::Graph;
use crate::graph::layer::Layer;
use crate::graph::layout::{fsync_dir, DIR_MODE};
use crate::graph::make::create_private;
use crate::graph::time::Timestamp;
use crate::ids;

/// The OCI image manifest media type.
pub const MANIFEST_V1: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image config media type.
pub const CONFIG_V1: &str = "application/vnd.oci.image.config.v1+json";
/// The OCI media type of an uncompressed layer.
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The longest repository name (distribution/reference's `NameTotalLengthMax`).
const NAME_MAX: usize = 255;

/// The most an image config may hold, as the JSON bytes kept. A record
/// holds its config as a JSON string (at most twice the bytes once
/// escaped) beside the manifest, and records are read whole on every
/// listing ([`crate::fs::private::READ_MAX`], 16 MiB), so a bigger config is
/// refused by [`Graph::tag`] and `commit_image` before anything is written,
/// not found unreadable later (layer metadata's reason for
/// [`crate::graph::record::METADATA_MAX`]). Docker's configs are a few KiB;
/// the registry client reads manifests up to the same 4 MiB.
pub const CONFIG_MAX: usize = 4 << 20;

/// Refuse a config that could not be kept: over [`CONFIG_MAX`], or one
/// the store's JSON reader would not read back (nested past its recursion
/// limit).
pub fn check_config(config: &[u8]) -> Result<()> {
    if config.len() > CONFIG_MAX {
        return Err(Error::InvalidArgument(format!(
            "image config is {} bytes as JSON; the limit is {CONFIG_MAX}",
            config.len()
        )));
    }
    if let Err(e) = serde_json::from_slice::<Value>(config) {
        return Err(Error::InvalidArgument(format!(
            "image config would not read back: {e}"
        )));
    }
    Ok(())
}

/// The bytes of config `config` for layers of diff IDs `diff_ids` (its
/// `rootfs` replaced), checked by [`check_config`].
pub(crate) fn config_bytes(
    mut config: serde_json::Map<String, Value>,
    diff_ids: Vec<Value>,
) -> Result<Vec<u8>> {
    config.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    let config = serde_json::to_vec(&Value::Object(config))
        .map_err(|e| Error::InvalidArgument(format!("image config: {e}")))?;
    check_config(&config)?;
    Ok(config)
}

/// Check an image name and give it its normal form: a reference as Docker
/// spells it (`[domain[:port]/]path[:tag]`, distribution/reference's
/// grammar), with `:latest` added where no tag is given. Digest references
/// (`app@sha256:...`) name content, not an image, and are refused.
pub fn normalize_name(name: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "invalid image name {:?}: {why}",
            name.escape_debug().to_string()
        ))
    };
    if name.contains('@') {
        return Err(bad("a digest reference cannot be an image's name"));
    }
    let (repo, tag) = match name.rfind(':') {
        Some(i) if !name[i + 1..].contains('/') => (&name[..i], &name[i + 1..]),
        _ => (name, "latest"),
    };
    if repo.is_empty() || repo.len() > NAME_MAX {
        return Err(bad("the repository is empty or longer than 255 bytes"));
    }
    let tag_ok = tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !tag_ok {
        return Err(bad("a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
    }
    let parts: Vec<&str> = repo.split('/').collect();
    let has_domain = parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost");
    let (domain, path) = if has_domain {
        (Some(parts[0]), &parts[1..])
    } else {
        (None, &parts[..])
    };
    if let Some(d) = domain {
        let (host, port) = match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        };
        let host_ok = host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        });
        let port_ok = port.map_or(true, |p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
        });
        if !host_ok || !port_ok {
            return Err(bad("the domain is not a host name with an optional port"));
        }
    }
    if !path.iter().all(|c| path_component_ok(c)) {
        return Err(bad("each path component is lowercase letters and digits, \
             joined by '.', '_', '__' or dashes"));
    }
    Ok(format!("{repo}:{tag}"))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// One image's record, `images/<sha256(name)>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image's name, normalized ([`normalize_name`]).
    pub name: String,
    /// Its layers' ids, base first.
    pub layers: Vec<String>,
    /// `sha256:<hex>` of `manifest`.
    pub digest: String,
    /// The manifest's media type.
    pub media_type: String,
    /// The manifest, byte for byte.
    pub manifest: String,
    /// The image config, byte for byte.
    pub config: String,
    /// When the record was written.
    pub created: Timestamp,
    /// Where it was pulled from (`host/repository`), so a push to another
    /// repository of that registry can mount its blobs instead of
    /// uploading them (Docker's distribution metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl ImageRecord {
    /// Check what a path or a lookup could be built from.
    pub fn validate(&self) -> Result<()> {
        if normalize_name(&self.name)? != self.name {
            return Err(Error::InvalidArgument(format!(
                "image name {:?} is not in its normal form",
                self.name
            )));
        }
        if self.layers.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "image {} has no layers",
                self.name
            )));
        }
        for id in &self.layers {
            ids::validate_id(id)?;
        }
        ids::validate_digest(&self.digest)?;
        if ids::sha256_digest(self.manifest.as_bytes()) != self.digest {
            return Err(Error::InvalidArgument(format!(
                "image {}: the digest is not the manifest's",
                self.name
            )));
        }
        Ok(())
    }

    /// The record as the bytes of its file; one that could not be read
    /// back (over [`crate::fs::private::READ_MAX`]: a pulled or loaded
    /// config is not held to [`CONFIG_MAX`]) is refused.
    fn to_json(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::InvalidArgument(format!("image {}: {e}", self.name)))?;
        v.push(b'\n');
        if v.len() as u64 > crate::fs::private::READ_MAX {
            return Err(Error::InvalidArgument(format!(
                "image {}: the record is {} bytes; the limit is {}",
                self.name,
                v.len(),
                crate::fs::private::READ_MAX
            )));
        }
        Ok(v)
    }

    /// The config as JSON.
    pub fn config_json(&self) -> Result<Value> {
        serde_json::from_str(&self.config)
            .map_err(|e| Error::Archive(format!("image {}: unparsable config: {e}", self.name)))
    }
}

/// The OCI architecture name of this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An OCI image manifest (canonical JSON, as lamina writes it) for a
/// config and layer descriptors `(media type, digest, size)`.
pub fn build_manifest(config: &[u8], layers: &[(String, String, u64)]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(t, d, s)| json!({"mediaType": t, "digest": d, "size": s}))
        .collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_V1,
        "config": {
            "mediaType": CONFIG_V1,
            "digest": ids::sha256_digest(config),
            "size": config.len(),
        },
        "layers": layers,
    });
    serde_json::to_vec(&m).expect("a manifest always encodes")
}

/// An image of a [`Graph`]: its record, as read when it was looked up.
#[derive(Debug, Clone)]
pub struct Image {
    graph: Graph,
    rec: ImageRecord,
}

impl Image {
    /// The image's record.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The image's record.
    pub fn record(&self) -> &ImageRecord {
        &self.rec
    }

    /// The name (`app:1`).
    pub fn name(&self) -> &str {
        &self.rec.name
    }

    /// The manifest digest.
    pub fn digest(&self) -> &str {
        &self.rec.digest
    }

    /// The top layer.
    pub fn layer(&self) -> Result<Layer> {
        let top = self.rec.layers.last().expect("validated: not empty");
        self.graph.layer(top)
    }

    /// The layers, base first.
    pub fn layers(&self) -> Result<Vec<Layer>> {
        self.rec
            .layers
            .iter()
            .map(|id| self.graph.layer(id))
            .collect()
    }

    /// The image config.
    pub fn config(&self) -> Result<Value> {
        self.rec.config_json()
    }

    /// When the image was made: the config's `created`, or else when it
    /// was recorded in this store.
    pub fn created(&self) -> Timestamp {
        self.config()
            .ok()
            .and_then(|c| c.get("created")?.as_str()?.parse().ok())
            .unwrap_or(self.rec.created)
    }
}

impl Graph {
    fn images_dir(&self) -> PathBuf {
        self.root().join("images")
    }

    /// `images/`, made if missing, and checked to be the store's own.
    fn ensure_images_dir(&self) -> Result<PathBuf> {
        let d = self.images_dir();
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(&d) {
            Ok(()) => fsync_dir(self.root())?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("mkdir", &d, e)),
        }
        let m = d.symlink_metadata().at("lstat", &d)?;
        if !m.is_dir() || m.uid() != rustix::process::geteuid().as_raw() || m.mode() & 0o022 != 0 {
            return Err(Error::corrupt(
                &d,
                "is not a directory of the store's own (a symlink, another owner's, or writable by others)",
            ));
        }
        Ok(d)
    }

    fn image_path(&self, name: &str) -> PathBuf {
        let hash = ids::sha256_digest(name.as_bytes());
        self.images_dir()
            .join(format!("{}.json", &hash[ids::SHA256_PREFIX.len()..]))
    }

    fn image_not_found(&self, name: &str) -> Error {
        Error::ImageNotFound {
            name: name.to_owned(),
            root: self.root().to_owned(),
        }
    }

    fn read_image_file(&self, path: &std::path::Path) -> Result<Option<ImageRecord>> {
        let Some(data) = crate::fs::private::read(path)? else {
            return Ok(None);
        };
        let rec: ImageRecord = serde_json::from_slice(&data)
            .map_err(|e| Error::corrupt(path, format!("unparsable image record: {e}")))?;
        rec.validate()
            .map_err(|e| Error::corrupt(path, e.to_string()))?;
        if self.image_path(&rec.name) != path {
            return Err(Error::corrupt(path, "the record names another image"));
        }
        Ok(Some(rec))
    }

    /// The image named `name` (normalized first: `app` is `app:latest`).
    pub fn image(&self, name: &str) -> Result<Image> {
        let name = normalize_name(name)?;
        match self.read_image_file(&self.image_path(&name))? {
            Some(rec) => Ok(Image {
                graph: self.clone(),
                rec,
            }),
            None => Err(self.image_not_found(&name)),
        }
    }

    /// Every image, by name.
    pub fn images(&self) -> Result<Vec<Image>> {
        let dir = self.images_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("readdir", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.at("readdir", &dir)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_record = name.strip_suffix(".json").is_some_and(ids::is_hex64);
            if !is_record {
                continue;
            }
            // Untagged since it was listed: not an error.
            if let Some(rec) = self.read_image_file(&path)? {
                out.push(Image {
                    graph: self.clone(),
                    rec,
                });
            }
        }
        out.sort_by(|a, b| a.rec.name.cmp(&b.rec.name));
        Ok(out)
    }

    /// Write an image record (see the module docs), replacing any record
    /// of the same name.
    pub(crate) fn put_image(&self, rec: ImageRecord) -> Result<Image> {
        self.check_open()?;
        rec.validate()?;
        let data = rec.to_json()?;
        let dir = self.ensure_images_dir()?;
        let dest = self.image_path(&rec.name);
        let layout = self.inner.store.layout();
        let g = self.inner.store.read_lock()?;
        for id in &rec.layers {
            if !layout.has_layer(id)? {
                return Err(layout.not_found(id));
            }
        }
        let st = layout.stage(&g, "image")?;
        let tmp = st.path().join("image.json");
        let mut f = create_private(&tmp)?;
        f.write_all(&data).at("write", &tmp)?;
        f.sync_all().at("fsync", &tmp)?;
        std::fs::rename(&tmp, &dest).at("rename", &dest)?;
        fsync_dir(&dir)?;
        drop(g);
        st.remove()?;
        Ok(Image {
            graph: self.clone(),
            rec,
        })
    }

    /// Name the read-only layer `layer` (an id or prefix) and its
    /// ancestors an image `name`, replacing any image of that name.
    ///
    /// With no `config`, an image whose layers are exactly these lends its
    /// config and manifest (so the digest stays, as `docker tag`), or else
    /// a minimal config is made. A given config is kept except for
    /// `rootfs`, which is set to the layers' diff IDs. The manifest lists
    /// the layers uncompressed (what [`Layer::diff`] gives).
    pub fn tag(&self, layer: &str, name: &str, config: Option<Value>) -> Result<Image> {
        self.check_open()?;
        let name = normalize_name(name)?;
        let top = self.get(layer)?;
        let chain = top.chain()?;
        let mut diff_ids = Vec::with_capacity(chain.len());
        let mut descs = Vec::with_capacity(chain.len());
        for l in &chain {
            match (l.diff_id(), l.tar_size()) {
                (Some(d), Some(size)) if !l.writable() => {
                    diff_ids.push(Value::from(d));
                    descs.push((LAYER_TAR.to_owned(), d.to_owned(), size));
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "layer {} is not a registered read-only layer (a container or \
                         init layer); commit it first",
                        l.id()
                    )))
                }
            }
        }
        let ids: Vec<String> = chain.iter().map(|l| l.id().to_owned()).collect();
        if config.is_none() {
            if let Some(same) = self.images()?.into_iter().find(|i| i.rec.layers == ids) {
                let mut rec = same.rec;
                rec.name = name;
                rec.created = Timestamp::now();
                return self.put_image(rec);
            }
        }
        let config = match config {
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(Error::InvalidArgument(
                    "an image config is a JSON object".into(),
                ))
            }
            None => {
                let mut m = serde_json::Map::new();
                m.insert("created".into(), Timestamp::now().to_string().into());
                m.insert("architecture".into(), host_arch().into());
                m.insert("os".into(), "linux".into());
                m.insert("config".into(), json!({}));
                m
            }
        };
        let config = config_bytes(config, diff_ids)?;
        let manifest = build_manifest(&config, &descs);
        self.put_image(ImageRecord {
            name,
            layers: ids,
            digest: ids::sha256_digest(&manifest),
            media_type: MANIFEST_V1.to_owned(),
            manifest: String::from_utf8(manifest).expect("JSON is UTF-8"),
            config: String::from_utf8(config).expect("JSON is UTF-8"),
            created: Timestamp::now(),
            source: None,
        })
    }

    /// Remove the name `name`; its layers stay.
    pub fn untag(&self, name: &str) -> Result<()> {
        self.check_open()?;
        let name = normalize_name(name)?;
        let path = self.image_path(&name);
        let _g = self.inner.store.read_lock()?;
        match std::fs::remove_file(&path) {
            Ok(()) => fsync_dir(&self.images_dir()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.image_not_found(&name)),
            Err(e) => Err(Error::io("unlink", &path, e)),
        }
    }

    /// Image records that cannot stand — unreadable, or naming a layer
    /// that is not in the store (after a repair removed it) — with what
    /// is wrong; for `check` and `repair`, which hold the store lock.
    pub(crate) fn broken_images(&self) -> Result<Vec<(PathBuf, String)>> {
        let dir = self.images_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("readdir", &dir, e)),
        };
        let layout = self.inner.store.layout();
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.at("readdir", &dir)?.path();
            let rec = match self.read_image_file(&path) {
                Ok(Some(rec)) => rec,
                Ok(None) => continue,
                Err(e) => {
                    out.push((path, format!("an image record that does not read: {e}")));
                    continue;
                }
            };
            for id in &rec.layers {
                if !layout.has_layer(id)? {
                    out.push((
                        path.clone(),
                        format!(
                            "the image {} names layer {id}, which is not in the store",
                            rec.name
                        ),
                    ));
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Remove a broken image record (`repair`, under the store lock held
    /// exclusive).
    pub(crate) fn remove_image_record(&self, path: &std::path::Path) -> Result<()> {
        std::fs::remove_file(path).at("unlink", path)?;
        fsync_dir(&self.images_dir())
    }

    /// The first image (by name) that uses layer `id`, for a delete to
    /// refuse; called under the store lock, exclusive.
    pub(crate) fn image_using(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .images()?
            .into_iter()
            .find(|i| i.rec.layers.iter().any(|l| l == id))
            .map(|i| i.rec.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config is refused where it could not be read back: over the cap,
    /// or nested past the JSON reader's recursion limit; one just under
    /// the cap is kept.
    #[test]
    fn configs_that_would_not_read_back_are_refused() {
        let labels = |n: usize| {
            let mut m = serde_json::Map::new();
            m.insert("config".into(), json!({"Labels": {"a": "x".repeat(n)}}));
            m
        };
        let ok = config_bytes(labels(CONFIG_MAX - 1024), vec![]).unwrap();
        assert!(ok.len() <= CONFIG_MAX);
        let e = config_bytes(labels(CONFIG_MAX), vec![]).unwrap_err();
        assert!(e.to_string().contains("the limit is 4194304"), "{e}");
        let mut deep = json!([]);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        let mut m = serde_json::Map::new();
        m.insert("deep".into(), deep);
        let e = config_bytes(m, vec![]).unwrap_err();
        assert!(e.to_string().contains("would not read back"), "{e}");
    }

    #[test]
    fn names_normalize_and_validate() {
        for (given, want) in [
            ("app", "app:latest"),
            ("app:1", "app:1"),
            ("lamina-test-image:1", "lamina-test-image:1"),
            (
                "library/app_x.y__z--w:v1.0-rc_1",
                "library/app_x.y__z--w:v1.0-rc_1",
            ),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("reg.example/a/b:t", "reg.example/a/b:t"),
            (
                "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
        ] {
            assert_eq!(normalize_name(given).unwrap(), want, "{given}");
        }
        for bad in [
            "",
            ":1",
            "App",
            "app:",
            "app:-x",
            "../app",
            "app/../x",
            "a//b",
            "app@sha256:00",
            "/app",
            "app/",
            "a_-b",
            "app\0",
            "app:1\n",
            &"a".repeat(300),
            &format!("app:{}", "t".repeat(129)),
        ] {
            assert!(normalize_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
