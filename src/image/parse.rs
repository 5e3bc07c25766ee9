//! What images a layout or archive holds: its index (OCI) or
//! `manifest.json` (docker save), each image's manifest and config, and
//! where each layer's blob is — read and checked before any layer is
//! applied.
//!
//! - OCI image layout (image-spec `image-layout.md`), also inside a tar,
//!   and docker save's OCI-style archive (Docker 25+: an OCI layout plus a
//!   `manifest.json`): `index.json` → manifests (a nested index, as
//!   `skopeo copy --all` writes, gives the manifest of this machine's
//!   platform) → config and layers, every blob checked against its
//!   descriptor (digest and size). Names come from the
//!   `io.containerd.image.name` annotation, else
//!   `org.opencontainers.image.ref.name`, and from `manifest.json`'s
//!   `RepoTags` where it is there too.
//! - docker save's legacy archive: `manifest.json` → `Config` (a file
//!   named by the config's digest, which is checked) and `Layers` (layer
//!   tars with no digest of their own: each is checked by its diff ID).
//!
//! Only `sha256` digests are taken; a digest is validated before a path is
//! built from it, and a path that `manifest.json` names must stay inside
//! the archive ([`Error::UnsafeArchive`] otherwise).

use std::io::Read;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::graph::images::{host_arch, normalize_name};
use crate::ids;
use crate::image::files::{Files, METADATA_MAX};
use crate::image::verify::Verified;

/// One layer of a found image.
#[derive(Debug, Clone)]
pub struct FoundLayer {
    /// Its blob's path in the layout or archive.
    pub path: String,
    /// The blob's digest and size where a descriptor gives them.
    pub digest: Option<(String, u64)>,
    /// The diff ID the config gives it.
    pub diff_id: String,
}

/// An image found in a layout or archive.
#[derive(Debug, Clone)]
pub struct FoundImage {
    /// Its names, normalized, in the order found.
    pub names: Vec<String>,
    /// The manifest's bytes and media type (OCI layouts); `None` for a
    /// legacy docker archive, which has none (one is made for it).
    pub manifest: Option<(Vec<u8>, String)>,
    /// The config, byte for byte.
    pub config: Vec<u8>,
    /// Its layers, base first.
    pub layers: Vec<FoundLayer>,
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

fn bad(files: &Files, what: impl std::fmt::Display) -> Error {
    Error::Archive(format!("{}: {what}", files.what()))
}

fn parse_json(files: &Files, data: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(data).map_err(|e| bad(files, format!("{what} is not valid JSON: {e}")))
}

/// `blobs/sha256/<hex>` for a `sha256:<hex>` digest (checked first).
pub fn blob_path(files: &Files, digest: &str) -> Result<String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if ids::is_hex64(hex) => Ok(format!("blobs/sha256/{hex}")),
        Some(("sha256", _)) | None => Err(bad(files, format!("invalid digest {digest:?}"))),
        Some((alg, _)) => Err(bad(
            files,
            format!("unsupported digest algorithm {alg:?} in {digest:?} (only sha256)"),
        )),
    }
}

/// A descriptor's digest and size.
fn descriptor(files: &Files, d: &Value, what: &str) -> Result<(String, u64)> {
    let digest = d
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(files, format!("{what}: a descriptor without a digest")))?;
    let size = d
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad(files, format!("{what}: a descriptor without a size")))?;
    blob_path(files, digest)?;
    Ok((digest.to_owned(), size))
}

/// A small blob (manifest, index, config), checked against its descriptor.
fn read_blob(files: &Files, digest: &str, size: u64) -> Result<Vec<u8>> {
    let path = blob_path(files, digest)?;
    if size > METADATA_MAX {
        return Err(bad(
            files,
            format!("{path}: {size} bytes is more than any image metadata blob"),
        ));
    }
    let o = files.open(&path)?;
    let label = format!("{}: {path}", files.what());
    let mut v = Verified::new(o.reader, &label, digest, size);
    let mut data = Vec::with_capacity(size as usize);
    v.read_to_end(&mut data)
        .map_err(crate::graph::chain::source_error)?;
    Ok(data)
}

fn names_of(annotations: Option<&Value>) -> Vec<String> {
    let get = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);
    get("io.containerd.image.name")
        .or_else(|| get("org.opencontainers.image.ref.name"))
        .and_then(|n| normalize_name(n).ok())
        .into_iter()
        .collect()
}

/// The images of `files`; see the module docs. The names an OCI-style
/// docker archive's `manifest.json` adds come from [`add_repo_tags`],
/// called once the layers are in (in a stream it may come after them).
pub fn find_images(files: &Files) -> Result<Vec<FoundImage>> {
    if files.exists("index.json") {
        oci_images(files)
    } else if files.exists("manifest.json") {
        docker_images(files)
    } else {
        Err(bad(
            files,
            "not an OCI image layout nor a docker archive (neither index.json nor manifest.json)",
        ))
    }
}

/// Docker 25's docker save: the `RepoTags` of its `manifest.json` name the
/// images of its OCI index (`found`, from [`find_images`]).
pub fn add_repo_tags(files: &Files, found: &mut [FoundImage]) -> Result<()> {
    if found.iter().any(|f| f.manifest.is_none()) || !files.exists("manifest.json") {
        return Ok(()); // a legacy archive: named already
    }
    let m = parse_json(files, &files.read_small("manifest.json")?, "manifest.json")?;
    for entry in m.as_array().into_iter().flatten() {
        let Some(config) = entry.get("Config").and_then(Value::as_str) else {
            continue;
        };
        let config = files.clean_path(config, "manifest.json")?;
        let Some(img) = found.iter_mut().find(|f| {
            ids::sha256_digest(&f.config)
                .strip_prefix("sha256:")
                .is_some_and(|h| config.ends_with(h))
        }) else {
            continue;
        };
        for t in entry
            .get("RepoTags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = t.as_str().and_then(|t| normalize_name(t).ok()) {
                if !img.names.contains(&n) {
                    img.names.push(n);
                }
            }
        }
    }
    Ok(())
}

fn oci_images(files: &Files) -> Result<Vec<FoundImage>> {
    let index = parse_json(files, &files.read_small("index.json")?, "index.json")?;
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(files, "index.json has no manifests list"))?;
    let mut out = Vec::new();
    for (i, d) in manifests.iter().enumerate() {
        let what = format!("index.json manifests[{i}]");
        let names = names_of(d.get("annotations"));
        if let Some(img) = from_descriptor(files, d, &what, names, 0)? {
            out.push(img);
        }
    }
    Ok(out)
}

fn media_type<'a>(d: &'a Value, blob: Option<&'a Value>) -> &'a str {
    d.get("mediaType")
        .and_then(Value::as_str)
        .or_else(|| blob?.get("mediaType")?.as_str())
        .unwrap_or("")
}

fn from_descriptor(
    files: &Files,
    d: &Value,
    what: &str,
    names: Vec<String>,
    depth: usize,
) -> Result<Option<FoundImage>> {
    if depth > 4 {
        return Err(bad(files, format!("{what}: indexes nested too deep")));
    }
    let (digest, size) = descriptor(files, d, what)?;
    let data = read_blob(files, &digest, size)?;
    let blob = parse_json(files, &data, &blob_path(files, &digest)?)?;
    let mt = media_type(d, Some(&blob)).to_owned();
    if INDEX_TYPES.contains(&mt.as_str()) || (mt.is_empty() && blob.get("manifests").is_some()) {
        let list = blob
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(files, format!("{what}: an index without manifests")))?;
        let platform_is = |m: &Value, arch: &str| {
            let p = m.get("platform");
            let get = |k: &str| p.and_then(|p| p.get(k)).and_then(Value::as_str);
            get("os") == Some("linux") && get("architecture") == Some(arch)
        };
        let pick = list
            .iter()
            .position(|m| platform_is(m, host_arch()))
            .or_else(|| (!list.is_empty()).then_some(0));
        return match pick {
            Some(k) => from_descriptor(
                files,
                &list[k],
                &format!("{what} → manifests[{k}]"),
                names,
                depth + 1,
            ),
            None => Ok(None),
        };
    }
    if !(MANIFEST_TYPES.contains(&mt.as_str()) || (mt.is_empty() && blob.get("layers").is_some())) {
        // An artifact that is not an image (an attestation, a signature).
        return Ok(None);
    }
    let (cdigest, csize) = descriptor(
        files,
        blob.get("config")
            .ok_or_else(|| bad(files, format!("{what}: a manifest without a config")))?,
        what,
    )?;
    let config = read_blob(files, &cdigest, csize)?;
    let diff_ids = diff_ids(files, &config, &blob_path(files, &cdigest)?)?;
    let layers = blob
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(files, format!("{what}: a manifest without layers")))?;
    if layers.len() != diff_ids.len() {
        return Err(bad(
            files,
            format!(
                "{what}: the manifest has {} layers, the config {} diff IDs",
                layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut found = Vec::with_capacity(layers.len());
    for (k, (l, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
        let (digest, size) = descriptor(files, l, &format!("{what} layers[{k}]"))?;
        found.push(FoundLayer {
            path: blob_path(files, &digest)?,
            digest: Some((digest, size)),
            diff_id,
        });
    }
    Ok(Some(FoundImage {
        names,
        manifest: Some((data, mt)),
        config,
        layers: found,
    }))
}

fn diff_ids(files: &Files, config: &[u8], what: &str) -> Result<Vec<String>> {
    let c = parse_json(files, config, what)?;
    let list = c
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad(files, format!("{what}: a config without rootfs.diff_ids")))?;
    if list.is_empty() {
        return Err(bad(files, format!("{what}: an image with no layers")));
    }
    list.iter()
        .map(|d| {
            d.as_str()
                .filter(|d| ids::validate_digest(d).is_ok())
                .map(str::to_owned)
                .ok_or_else(|| bad(files, format!("{what}: invalid diff ID {d}")))
        })
        .collect()
}

fn docker_images(files: &Files) -> Result<Vec<FoundImage>> {
    let m = parse_json(files, &files.read_small("manifest.json")?, "manifest.json")?;
    let entries = m
        .as_array()
        .ok_or_else(|| bad(files, "manifest.json is not a list"))?;
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let what = format!("manifest.json[{i}]");
        let config_path = e
            .get("Config")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(files, format!("{what}: no Config")))?;
        let config_path = files.clean_path(config_path, &what)?;
        let config = files.read_small(&config_path)?;
        // The legacy archive names the config by its digest: check it.
        let base = config_path.rsplit('/').next().unwrap_or("");
        let hex = base.strip_suffix(".json").unwrap_or(base);
        if ids::is_hex64(hex) {
            let got = ids::sha256_digest(&config);
            if got[7..] != *hex {
                return Err(bad(
                    files,
                    format!(
                        "{config_path}: digest mismatch: the config hashes to {got}, \
                         its name says sha256:{hex}"
                    ),
                ));
            }
        }
        let diff_ids = diff_ids(files, &config, &config_path)?;
        let layers = e
            .get("Layers")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(files, format!("{what}: no Layers")))?;
        if layers.len() != diff_ids.len() {
            return Err(bad(
                files,
                format!(
                    "{what}: {} layers, but the config has {} diff IDs",
                    layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut found = Vec::with_capacity(layers.len());
        for (l, diff_id) in layers.iter().zip(diff_ids) {
            let p = l
                .as_str()
                .ok_or_else(|| bad(files, format!("{what}: a layer path that is not a string")))?;
            // Not looked for now: in a stream it may come later.
            let path = files.clean_path(p, &what)?;
            found.push(FoundLayer {
                path,
                digest: None,
                diff_id,
            });
        }
        let names = e
            .get("RepoTags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| normalize_name(t.as_str()?).ok())
            .collect();
        out.push(FoundImage {
            names,
            manifest: None,
            config,
            layers: found,
        });
    }
    Ok(out)
}
