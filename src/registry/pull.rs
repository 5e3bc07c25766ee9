//! `Graph::pull`: an image from a registry, in one pass per blob.
//!
//! The manifest is resolved (an index or manifest list gives this machine's
//! platform, or the one asked for), the config fetched and checked, and the
//! layers go through [`Graph::register_chain`] as an image load's do: layers
//! already in the store (same chain id) are never fetched, the rest stream
//! from the socket through the digest check of the compressed bytes
//! ([`crate::image::verify`]), decompression, the diff ID's SHA-256 and the
//! apply with its tar-split record — no temporary copy of a blob; on
//! overlay2 two layers download and apply at once. Memory per layer is the
//! apply pipeline's bound (a few MiB: [`crate::archive::digest`]) plus the
//! HTTP buffers. A blob whose digest or diff ID is wrong fails the pull and
//! the store keeps nothing of it. The manifest and config are stored byte
//! for byte, so the image's digest is the registry's.

use serde_json::Value;

use super::blobsums::{self, Blobsum};
use super::client::Client;
use super::credentials::Credentials;
use super::reference::Reference;
use super::resume::Resuming;
use crate::error::{Error, Result};
use crate::graph::images::{host_arch, ImageRecord};
use crate::graph::{ChainLayer, Graph, Image, Progress, Timestamp};
use crate::ids;
use crate::image::verify::Verified;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Largest manifest or config read (containerd's limit for manifests).
const DOC_MAX: u64 = 4 << 20;

/// Room for an image record's fields besides its manifest and config.
const RECORD_SLACK: usize = 64 << 10;

/// What a pull is asked.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// `os/arch[/variant]`; `None`: this machine's.
    pub platform: Option<String>,
    /// Credentials; `None`: Docker's config file, else anonymous.
    pub auth: Option<Credentials>,
    /// Allow plain HTTP and unverified TLS for this registry.
    pub insecure: bool,
}

struct Doc {
    bytes: Vec<u8>,
    media_type: String,
    digest: String,
}

fn registry_err(r: &Reference, what: impl std::fmt::Display) -> Error {
    Error::Registry(format!("{r}: {what}"))
}

fn fetch_manifest(c: &Client, r: &Reference, by: &str, scope: &str) -> Result<Doc> {
    let accept = [
        OCI_INDEX,
        DOCKER_LIST,
        OCI_MANIFEST,
        DOCKER_MANIFEST,
        SCHEMA1[0],
        SCHEMA1[1],
    ]
    .join(", ");
    let resp = c.get("GET", &format!("{}/manifests/{by}", r.repo), &accept, scope)?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Err(Error::RegistryNotFound(format!(
            "{r}: manifest {by} not found in {}",
            r.repo
        )));
    }
    if status != 200 {
        return Err(registry_err(r, format!("GET manifest {by}: HTTP {status}")));
    }
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let bytes = c.read_small(resp, DOC_MAX, &format!("{r}: manifest {by}"))?;
    let digest = ids::sha256_digest(&bytes);
    if by.starts_with("sha256:") && digest != by {
        return Err(registry_err(
            r,
            format!("manifest {by}: the registry sent bytes that hash to {digest}"),
        ));
    }
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| registry_err(r, format!("manifest {by} is not JSON: {e}")))?;
    let media_type = v
        .get("mediaType")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or(ct);
    if SCHEMA1.contains(&media_type.as_str())
        || v.get("schemaVersion").and_then(Value::as_u64) == Some(1)
    {
        return Err(Error::UnsupportedManifest(format!(
            "{r}: a Docker schema 1 manifest ({media_type}); schema 1 is deprecated and not \
             pulled: push the image again with a current client"
        )));
    }
    Ok(Doc {
        bytes,
        media_type,
        digest,
    })
}

/// This machine's platform as OCI names it.
fn host_platform() -> (String, String, Option<String>) {
    let variant = match host_arch() {
        "arm64" => Some("v8".to_owned()),
        _ => None,
    };
    ("linux".to_owned(), host_arch().to_owned(), variant)
}

fn parse_platform(p: &str) -> Result<(String, String, Option<String>)> {
    let parts: Vec<&str> = p.split('/').collect();
    match parts.as_slice() {
        [os, arch] => Ok(((*os).into(), (*arch).into(), None)),
        [os, arch, v] => Ok(((*os).into(), (*arch).into(), Some((*v).into()))),
        _ => Err(Error::InvalidArgument(format!(
            "platform {p:?}: os/arch or os/arch/variant, e.g. linux/arm64"
        ))),
    }
}

fn pick_platform(
    r: &Reference,
    index: &Value,
    want: &(String, String, Option<String>),
) -> Result<(String, Option<String>)> {
    let list = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| registry_err(r, "an index without manifests"))?;
    let get = |m: &Value, k: &str| {
        m.get("platform")
            .and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let matches = |m: &&Value, strict_variant: bool| {
        get(m, "os").as_deref() == Some(want.0.as_str())
            && get(m, "architecture").as_deref() == Some(want.1.as_str())
            && (!strict_variant || want.2.is_none() || get(m, "variant") == want.2)
    };
    let found = list
        .iter()
        .find(|m| matches(m, true))
        .or_else(|| list.iter().find(|m| matches(m, false)));
    let Some(m) = found else {
        let have: Vec<String> = list
            .iter()
            .map(|m| {
                let mut s = format!(
                    "{}/{}",
                    get(m, "os").unwrap_or_default(),
                    get(m, "architecture").unwrap_or_default()
                );
                if let Some(v) = get(m, "variant") {
                    s.push_str(&format!("/{v}"));
                }
                s
            })
            .collect();
        return Err(Error::RegistryNotFound(format!(
            "{r}: no manifest for {}/{}{} (the index has {})",
            want.0,
            want.1,
            want.2
                .as_deref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default(),
            have.join(", ")
        )));
    };
    let digest = m
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| registry_err(r, "an index entry without a digest"))?;
    ids::validate_digest(digest).map_err(|_| registry_err(r, format!("bad digest {digest}")))?;
    Ok((
        digest.to_owned(),
        m.get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_owned),
    ))
}

fn descriptor(r: &Reference, d: &Value, what: &str) -> Result<(String, u64, String)> {
    let digest = d.get("digest").and_then(Value::as_str).unwrap_or("");
    ids::validate_digest(digest)
        .map_err(|_| registry_err(r, format!("{what}: bad digest {digest:?}")))?;
    let size = d
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| registry_err(r, format!("{what}: no size")))?;
    let mt = d
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Ok((digest.to_owned(), size, mt))
}

impl Graph {
    /// Pull `reference` into the store and name the image by it. See the
    /// module docs.
    pub fn pull(
        &self,
        reference: &str,
        opts: &PullOptions,
        progress: Option<&Progress<'_>>,
    ) -> Result<Image> {
        self.check_open()?;
        let r = Reference::parse(reference)?;
        let want = match &opts.platform {
            Some(p) => parse_platform(p)?,
            None => host_platform(),
        };
        let client = Client::connect(&r.host, opts.auth.clone(), opts.insecure)?;
        let scope = format!("repository:{}:pull", r.repo);
        let source = format!("{}/{}", r.host, r.repo);
        let mut doc = fetch_manifest(&client, &r, r.manifest_ref(), &scope)?;
        for _ in 0..4 {
            if doc.media_type != OCI_INDEX && doc.media_type != DOCKER_LIST {
                break;
            }
            let index: Value = serde_json::from_slice(&doc.bytes)
                .map_err(|e| registry_err(&r, format!("index: {e}")))?;
            let (digest, _) = pick_platform(&r, &index, &want)?;
            doc = fetch_manifest(&client, &r, &digest, &scope)?;
        }
        if doc.media_type != OCI_MANIFEST && doc.media_type != DOCKER_MANIFEST {
            return Err(Error::UnsupportedManifest(format!(
                "{r}: manifest {} has media type {:?}, not an image manifest (OCI or Docker schema 2)",
                doc.digest, doc.media_type
            )));
        }
        let manifest: Value = serde_json::from_slice(&doc.bytes)
            .map_err(|e| registry_err(&r, format!("manifest: {e}")))?;
        let (cdigest, csize, _) =
            descriptor(&r, manifest.get("config").unwrap_or(&Value::Null), "config")?;
        // The same manifest pulled before: its config is in the store, and
        // a second pull fetches no blob at all.
        let known = self
            .images()?
            .into_iter()
            .find(|i| i.digest() == doc.digest)
            .map(|i| i.record().config.clone().into_bytes());
        let config = match known {
            Some(c) => c,
            None => {
                let resp = client.get("GET", &format!("{}/blobs/{cdigest}", r.repo), "", &scope)?;
                if resp.status().as_u16() != 200 {
                    return Err(registry_err(
                        &r,
                        format!("GET config {cdigest}: HTTP {}", resp.status().as_u16()),
                    ));
                }
                client.read_small(resp, DOC_MAX.max(csize), &format!("{r}: config {cdigest}"))?
            }
        };
        if config.len() as u64 != csize || ids::sha256_digest(&config) != cdigest {
            return Err(registry_err(
                &r,
                format!("config {cdigest}: the registry sent other bytes (digest or size differ)"),
            ));
        }
        let cfg: Value = serde_json::from_slice(&config)
            .map_err(|e| registry_err(&r, format!("config {cdigest}: {e}")))?;
        // The image record holds the manifest and config as JSON strings
        // and is read whole on every listing: one that would not fit is
        // refused now, before any layer lands, not after.
        let escaped =
            |b: &[u8]| serde_json::to_string(&String::from_utf8_lossy(b)).map_or(0, |s| s.len());
        let record = escaped(&doc.bytes) + escaped(&config) + RECORD_SLACK;
        if record as u64 > crate::fs::private::READ_MAX {
            return Err(registry_err(
                &r,
                format!(
                    "config {cdigest}: {csize} bytes, with the manifest a record of about {record} \
                     bytes; the store's limit is {}",
                    crate::fs::private::READ_MAX
                ),
            ));
        }
        let diff_ids: Vec<String> = cfg
            .get("rootfs")
            .and_then(|x| x.get("diff_ids"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let layers = manifest
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if layers.is_empty() || layers.len() != diff_ids.len() {
            return Err(registry_err(
                &r,
                format!(
                    "manifest {}: {} layers, the config {} diff IDs",
                    doc.digest,
                    layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut chain = Vec::with_capacity(layers.len());
        let mut sums = Vec::with_capacity(layers.len());
        for (k, (l, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
            let (digest, size, mt) = descriptor(&r, l, &format!("layers[{k}]"))?;
            sums.push((
                diff_id.clone(),
                Blobsum {
                    digest: digest.clone(),
                    size,
                    media_type: mt.clone(),
                    source: Some(source.clone()),
                },
            ));
            if mt.contains("nondistributable") || mt.contains("foreign") {
                return Err(registry_err(
                    &r,
                    format!("layer {digest}: {mt} layers are not pulled"),
                ));
            }
            let label = format!("{r}: blob {digest}");
            let (client, repo, scope, label2, diff_id2) = (
                &client,
                r.repo.clone(),
                scope.clone(),
                label.clone(),
                diff_id.clone(),
            );
            chain.push(ChainLayer {
                open: Box::new(move || {
                    let resp = client.get("GET", &format!("{repo}/blobs/{digest}"), "", &scope)?;
                    let status = resp.status().as_u16();
                    if status != 200 {
                        return Err(Error::Registry(format!("{label2}: HTTP {status}")));
                    }
                    let body = Resuming::new(
                        client,
                        format!("{repo}/blobs/{digest}"),
                        scope,
                        label2.clone(),
                        size,
                        Box::new(resp.into_body().into_reader()),
                    );
                    Ok(
                        Box::new(Verified::new_layer(body, &label2, &digest, size, &diff_id2))
                            as Box<dyn std::io::Read + Send>,
                    )
                }),
                diff_id,
                label,
                size: Some(size),
            });
        }
        let made = self.register_chain(None, chain, progress)?;
        for (diff_id, b) in sums {
            blobsums::remember(self, &diff_id, b)?;
        }
        let name = r.image_name().unwrap_or_else(|| doc.digest.clone());
        let text = |b: Vec<u8>, what: &str| {
            String::from_utf8(b).map_err(|_| registry_err(&r, format!("the {what} is not UTF-8")))
        };
        self.put_image(ImageRecord {
            name,
            layers: made.iter().map(|l| l.id().to_owned()).collect(),
            digest: doc.digest.clone(),
            media_type: doc.media_type.clone(),
            manifest: text(doc.bytes, "manifest")?,
            config: text(config, "config")?,
            created: Timestamp::now(),
            source: Some(source),
        })
    }
}
