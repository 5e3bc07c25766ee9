//! `Graph::push`: an image to a registry, uploading only what it lacks.
//!
//! For each layer, the blobs the store knows for its diff ID (from the
//! manifests of its images: a pulled image's compressed blobs, a loaded
//! one's) are asked for first: a blob the target repository has (HEAD) is
//! skipped; one the image was pulled from another repository of the same
//! registry is mounted (`POST …/blobs/uploads/?mount=&from=`), as Docker
//! does from its distribution metadata. Only then is the layer uploaded:
//! its exact tar ([`Layer::diff`], from its tar-split record) compressed
//! while it streams into one chunked `PATCH`, its SHA-256 taken on the
//! way, and the upload closed with `PUT ?digest=` — no temporary file, and
//! memory bounded by the pipe and the encoder's window. Two layers go at
//! once. Then the config (monolithic), then the manifest: the stored one,
//! byte for byte, where every blob it lists was reused (so an unchanged
//! image pushed back keeps its digest), else a new one of the image's
//! flavour (Docker schema 2 stays Docker, OCI stays OCI; zstd is OCI only).

use std::collections::{HashMap, HashSet};
use std::io::Write;

use serde_json::{json, Value};

use super::blobsums::{self, Blobsum};
use super::client::Client;
use super::credentials::Credentials;
use super::reference::Reference;
use crate::archive::compression::Compression;
use crate::error::{Error, Result};
use crate::graph::chain::{in_order, Counted, Progress, APPLY_WORKERS};
use crate::graph::images::{CONFIG_V1, LAYER_TAR, MANIFEST_V1};
use crate::graph::{Graph, Layer};
use crate::ids;
use crate::image::save::encode_blob;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Most other repositories a push asks to mount from (a token's scope
/// list stays short; moby tries at most a few candidates per layer too).
const MOUNT_SOURCES: usize = 8;
/// Most blobs asked for (HEAD) per layer before it is mounted or uploaded.
const HEAD_CANDIDATES: usize = 4;

/// What a push is asked.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Credentials; `None`: Docker's config file, else anonymous.
    pub auth: Option<Credentials>,
    /// Allow plain HTTP and unverified TLS for this registry.
    pub insecure: bool,
    /// How layers that must be uploaded are compressed.
    pub compression: Compression,
    /// The manifest's format; `None`: the image's own (a manifest lamina
    /// made, as for a `docker save` archive, is OCI).
    pub format: Option<ManifestFormat>,
}

/// A pushed manifest's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// `application/vnd.oci.image.manifest.v1+json`.
    Oci,
    /// Docker's image manifest, schema 2 (no zstd layers).
    Docker,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            auth: None,
            insecure: false,
            compression: Compression::Gzip,
            format: None,
        }
    }
}

/// A layer blob as the pushed manifest lists it.
#[derive(Debug, Clone)]
struct Pushed {
    digest: String,
    size: u64,
    media_type: String,
}

/// Every blob known for each diff ID: the distribution records
/// ([`blobsums`]) first, newest first, then what the store's image
/// manifests list.
fn known_blobs(g: &Graph, diff_ids: &[&str]) -> Result<HashMap<String, Vec<Blobsum>>> {
    let mut out: HashMap<String, Vec<Blobsum>> = diff_ids
        .iter()
        .map(|d| ((*d).to_owned(), blobsums::recall(g, d)))
        .collect();
    for img in g.images()? {
        let rec = img.record();
        let (Ok(m), Ok(c)) = (
            serde_json::from_str::<Value>(&rec.manifest),
            serde_json::from_str::<Value>(&rec.config),
        ) else {
            continue;
        };
        let layers = m.get("layers").and_then(Value::as_array);
        let ids = c
            .get("rootfs")
            .and_then(|r| r.get("diff_ids"))
            .and_then(Value::as_array);
        let (Some(layers), Some(ids)) = (layers, ids) else {
            continue;
        };
        if layers.len() != ids.len() {
            continue;
        }
        for (l, d) in layers.iter().zip(ids) {
            let (Some(digest), Some(size), Some(list)) = (
                l.get("digest").and_then(Value::as_str),
                l.get("size").and_then(Value::as_u64),
                d.as_str().and_then(|d| out.get_mut(d)),
            ) else {
                continue;
            };
            let k = Blobsum {
                digest: digest.to_owned(),
                size,
                media_type: l
                    .get("mediaType")
                    .and_then(Value::as_str)
                    .unwrap_or(LAYER_TAR)
                    .to_owned(),
                source: rec.source.clone(),
            };
            if !list.contains(&k) {
                list.push(k);
            }
        }
    }
    Ok(out)
}

/// `media_type` in the vocabulary of a Docker schema 2 manifest (`docker`)
/// or an OCI one.
fn layer_type(media_type: &str, docker: bool) -> String {
    match (docker, compression_of(media_type)) {
        (true, Compression::Gzip) => format!("{DOCKER_LAYER}.gzip"),
        (true, Compression::None) => DOCKER_LAYER.to_owned(),
        (_, Compression::Gzip) => format!("{LAYER_TAR}+gzip"),
        (_, Compression::Zstd) => format!("{LAYER_TAR}+zstd"),
        (false, Compression::None) => LAYER_TAR.to_owned(),
    }
}

/// The compression a layer media type names.
fn compression_of(media_type: &str) -> Compression {
    if media_type.ends_with("gzip") {
        Compression::Gzip
    } else if media_type.ends_with("zstd") {
        Compression::Zstd
    } else {
        Compression::None
    }
}

fn with_query(url: &str, q: &str) -> String {
    format!("{url}{}{q}", if url.contains('?') { '&' } else { '?' })
}

struct Pusher<'a> {
    client: &'a Client,
    r: &'a Reference,
    scope: String,
}

impl Pusher<'_> {
    fn err(&self, what: impl std::fmt::Display) -> Error {
        Error::Registry(format!("{}: {what}", self.r))
    }

    fn has_blob(&self, digest: &str) -> Result<bool> {
        let resp = self.client.get(
            "HEAD",
            &format!("{}/blobs/{digest}", self.r.repo),
            "",
            &self.scope,
        )?;
        Ok(resp.status().as_u16() == 200)
    }

    /// Start an upload; with `mount`, first ask for a cross-repository
    /// mount: `Ok(None)` when the registry mounted the blob.
    fn start_upload(&self, mount: Option<(&str, &str)>) -> Result<Option<String>> {
        let mut url = self.client.url(&format!("{}/blobs/uploads/", self.r.repo));
        if let Some((digest, from)) = mount {
            url = with_query(&url, &format!("mount={digest}&from={from}"));
        }
        let resp = self.client.send("POST", &url, &[], None, &self.scope)?;
        match resp.status().as_u16() {
            201 if mount.is_some() => Ok(None),
            202 => Ok(Some(self.client.location(&resp)?)),
            s => Err(self.err(format!("POST {url}: HTTP {s}"))),
        }
    }

    fn finish_upload(&self, location: &str, digest: &str, body: Option<&[u8]>) -> Result<()> {
        let url = with_query(location, &format!("digest={digest}"));
        let headers = [("Content-Type", "application/octet-stream".to_owned())];
        let resp = self.client.send("PUT", &url, &headers, body, &self.scope)?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            s => Err(self.err(format!("blob {digest}: closing PUT: HTTP {s}"))),
        }
    }

    /// Upload a small document (the config) in one request.
    fn put_blob(&self, bytes: &[u8]) -> Result<()> {
        let digest = ids::sha256_digest(bytes);
        if self.has_blob(&digest)? {
            return Ok(());
        }
        let loc = self
            .start_upload(None)?
            .ok_or_else(|| self.err("the registry answered an upload with a mount"))?;
        self.finish_upload(&loc, &digest, Some(bytes))
    }

    /// One layer: skipped, mounted, or compressed and uploaded.
    fn layer(
        &self,
        layer: &Layer,
        known: &[Blobsum],
        own: &HashSet<String>,
        compression: Compression,
        docker: bool,
        progress: Option<&Progress<'_>>,
    ) -> Result<Pushed> {
        let reuse = |k: &Blobsum| Pushed {
            digest: k.digest.clone(),
            size: k.size,
            media_type: layer_type(&k.media_type, docker),
        };
        let here = format!("{}/", self.r.host);
        let target = format!("{here}{}", self.r.repo);
        // Candidates this registry may hold: known to be in the target
        // repository first, then of unknown origin, then in another
        // repository here (the mount candidates). zstd has no Docker
        // schema 2 media type.
        let mut cands: Vec<(u8, &Blobsum)> = known
            .iter()
            .filter(|k| !(docker && k.media_type.ends_with("zstd")))
            // A blob of another compression than asked stands in only
            // where it is the image's own (so an image goes back as it was).
            .filter(|k| compression_of(&k.media_type) == compression || own.contains(&k.digest))
            .filter_map(|k| match k.source.as_deref() {
                Some(s) if s == target => Some((0, k)),
                None => Some((1, k)),
                Some(s) if s.starts_with(&here) => Some((2, k)),
                Some(_) => None,
            })
            .collect();
        cands.sort_by_key(|(rank, _)| *rank);
        for (_, k) in cands.iter().take(HEAD_CANDIDATES) {
            if self.has_blob(&k.digest)? {
                if let Some(p) = progress {
                    p.layer_done();
                }
                return Ok(reuse(k));
            }
        }
        let mut session = None;
        let mounts = cands.iter().filter(|(rank, _)| *rank == 2);
        for (_, k) in mounts.take(MOUNT_SOURCES) {
            let from = k.source.as_deref().and_then(|s| s.strip_prefix(&here));
            let Some(from) = from else { continue };
            match self.start_upload(Some((&k.digest, from)))? {
                None => {
                    if let Some(p) = progress {
                        p.layer_done();
                    }
                    return Ok(reuse(k));
                }
                // Not mountable: the spec's answer is a fresh upload
                // session; the last one is the upload's, the others are
                // cancelled (best effort: a registry expires them too).
                Some(loc) => {
                    if let Some(old) = session.replace(loc) {
                        let _ = self.client.send("DELETE", &old, &[], None, &self.scope);
                    }
                }
            }
        }
        let location = match session {
            Some(l) => l,
            None => self
                .start_upload(None)?
                .ok_or_else(|| self.err("the registry answered an upload with a mount"))?,
        };
        self.upload_layer(layer, &location, compression, docker, progress)
    }

    fn upload_layer(
        &self,
        layer: &Layer,
        location: &str,
        compression: Compression,
        docker: bool,
        progress: Option<&Progress<'_>>,
    ) -> Result<Pushed> {
        let label = format!("layer {}", layer.id());
        // rustix's pipe rather than std::io::pipe: the crate's MSRV is
        // older than that API.
        let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| self.err(format!("{label}: pipe: {e}")))?;
        // A pipe of 1 MiB rather than 64 KiB: fewer wake-ups between the
        // compressor and the sender.
        let _ = rustix::pipe::fcntl_setpipe_size(&writer, 1 << 20);
        let (reader, writer) = (std::fs::File::from(reader), std::fs::File::from(writer));
        let (made, sent) = std::thread::scope(|s| {
            let producer = s.spawn(move || compress_into(layer, compression, writer, progress));
            let mut reader = reader;
            let headers = [("Content-Type", "application/octet-stream".to_owned())];
            let sent =
                self.client
                    .send_stream("PATCH", location, &headers, &mut reader, &self.scope);
            // The producer must not block on a pipe nobody reads any more.
            drop(reader);
            let made = producer
                .join()
                .unwrap_or_else(|_| Err(self.err(format!("{label}: the compressor panicked"))));
            (made, sent)
        });
        // A cut upload shows in both; the HTTP side says why.
        let resp = sent.map_err(|e| self.err(format!("{label}: upload: {e}")))?;
        let (digest, size) = made?;
        let status = resp.status().as_u16();
        if status != 202 && status != 204 {
            return Err(self.err(format!("{label}: PATCH: HTTP {status}")));
        }
        let next = self.client.location(&resp)?;
        self.finish_upload(&next, &digest, None)?;
        if let Some(p) = progress {
            p.layer_done();
        }
        Ok(Pushed {
            digest,
            size,
            media_type: layer_type(
                match compression {
                    Compression::None => LAYER_TAR,
                    Compression::Gzip => "+gzip",
                    Compression::Zstd => "+zstd",
                },
                docker,
            ),
        })
    }
}

/// `layer`'s tar, compressed, into `out`: its digest and size.
fn compress_into(
    layer: &Layer,
    c: Compression,
    out: std::fs::File,
    progress: Option<&Progress<'_>>,
) -> Result<(String, u64)> {
    // Progress counts the compressed bytes, as they are sent.
    let out = Counted::new(std::io::BufWriter::with_capacity(1 << 20, out), progress);
    let werr = |e: std::io::Error| Error::Registry(format!("layer {}: upload: {e}", layer.id()));
    let (mut out, digest, size) = encode_blob(layer, c, out, None, werr)?;
    out.flush().map_err(werr)?;
    Ok((digest, size))
}

impl Graph {
    /// Push the image `image` to `reference` (default: its own name); the
    /// pushed manifest's digest. See the module docs.
    pub fn push(
        &self,
        image: &str,
        reference: Option<&str>,
        opts: &PushOptions,
        progress: Option<&Progress<'_>>,
    ) -> Result<String> {
        self.check_open()?;
        let img = self.image(image)?;
        let r = Reference::parse(reference.unwrap_or(img.name()))?;
        if r.digest.is_some() {
            return Err(Error::InvalidArgument(format!(
                "push to {r}: a push names a tag, not a digest"
            )));
        }
        let rec = img.record().clone();
        let layers = img.layers()?;
        let client = Client::connect(&r.host, opts.auth.clone(), opts.insecure)?;
        let diff_ids = layers
            .iter()
            .map(|l| {
                l.diff_id().ok_or_else(|| {
                    Error::InvalidArgument(format!("layer {} has no diff ID", l.id()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let known = known_blobs(self, &diff_ids)?;
        // A token good for every repository a layer could be mounted from.
        let mut scope = format!("repository:{}:pull,push", r.repo);
        let here = format!("{}/", r.host);
        let mut froms: Vec<&str> = known
            .values()
            .flatten()
            .filter_map(|b| b.source.as_deref()?.strip_prefix(&here))
            .filter(|f| *f != r.repo)
            .collect();
        froms.sort_unstable();
        froms.dedup();
        for from in froms.iter().take(MOUNT_SOURCES) {
            scope.push_str(&format!(" repository:{from}:pull"));
        }
        let p = Pusher {
            client: &client,
            r: &r,
            scope,
        };
        // zstd layers have no Docker schema 2 media type.
        let docker = match opts.format {
            Some(ManifestFormat::Docker) if opts.compression == Compression::Zstd => {
                return Err(Error::InvalidArgument(format!(
                    "push to {r}: a Docker schema 2 manifest cannot list zstd layers"
                )))
            }
            Some(f) => f == ManifestFormat::Docker,
            None => rec.media_type == DOCKER_MANIFEST && opts.compression != Compression::Zstd,
        };
        if let Some(pr) = progress {
            pr.add_total(0, layers.len());
        }
        let own: HashSet<String> = serde_json::from_str::<Value>(&rec.manifest)
            .ok()
            .and_then(|m| {
                let ls = m.get("layers")?.as_array()?.iter();
                Some(
                    ls.filter_map(|l| Some(l.get("digest")?.as_str()?.to_owned()))
                        .collect(),
                )
            })
            .unwrap_or_default();
        let none = Vec::new();
        let pushed = in_order(layers.len(), APPLY_WORKERS, "a layer push worker", |k| {
            let known = known.get(diff_ids[k]).unwrap_or(&none);
            let b = p.layer(&layers[k], known, &own, opts.compression, docker, progress)?;
            blobsums::remember(
                self,
                diff_ids[k],
                Blobsum {
                    digest: b.digest.clone(),
                    size: b.size,
                    media_type: b.media_type.clone(),
                    source: Some(format!("{}/{}", r.host, r.repo)),
                },
            )?;
            Ok(b)
        })?;
        p.put_blob(rec.config.as_bytes())?;
        let (manifest, media_type) = manifest_of(&rec, &pushed, docker);
        let resp = client.send(
            "PUT",
            &client.url(&format!(
                "{}/manifests/{}",
                r.repo,
                r.tag.as_deref().unwrap_or("latest")
            )),
            &[("Content-Type", media_type.clone())],
            Some(&manifest),
            &p.scope,
        )?;
        let status = resp.status().as_u16();
        if status != 201 && status != 200 {
            let body = client
                .read_small(resp, 64 << 10, "an error")
                .unwrap_or_default();
            return Err(p.err(format!(
                "PUT manifest: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        Ok(ids::sha256_digest(&manifest))
    }
}

/// The manifest to push: the stored one where it lists exactly the blobs
/// pushed, else a new one.
fn manifest_of(
    rec: &crate::graph::images::ImageRecord,
    pushed: &[Pushed],
    docker: bool,
) -> (Vec<u8>, String) {
    let stored = serde_json::from_str::<Value>(&rec.manifest).ok();
    let same = (rec.media_type == DOCKER_MANIFEST) == docker
        && stored.as_ref().is_some_and(|m| {
            let cfg = m
                .get("config")
                .and_then(|c| c.get("digest"))
                .and_then(Value::as_str)
                == Some(ids::sha256_digest(rec.config.as_bytes()).as_str());
            let ls = m.get("layers").and_then(Value::as_array);
            cfg && ls.is_some_and(|ls| {
                ls.len() == pushed.len()
                    && ls
                        .iter()
                        .zip(pushed)
                        .all(|(l, b)| l.get("digest").and_then(Value::as_str) == Some(&b.digest))
            })
        });
    if same {
        return (rec.manifest.as_bytes().to_vec(), rec.media_type.clone());
    }
    let (mt, cfg_mt) = if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    } else {
        (MANIFEST_V1, CONFIG_V1)
    };
    let m = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {
            "mediaType": cfg_mt,
            "digest": ids::sha256_digest(rec.config.as_bytes()),
            "size": rec.config.len(),
        },
        "layers": pushed
            .iter()
            .map(|b| json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size}))
            .collect::<Vec<_>>(),
    });
    (
        serde_json::to_vec(&m).expect("a manifest always encodes"),
        mt.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_follow_the_manifest_flavour() {
        let gz = "application/vnd.docker.image.rootfs.diff.tar.gzip";
        assert_eq!(layer_type(gz, true), gz);
        assert_eq!(layer_type(gz, false), format!("{LAYER_TAR}+gzip"));
        assert_eq!(layer_type(&format!("{LAYER_TAR}+gzip"), true), gz);
        assert_eq!(layer_type(LAYER_TAR, true), DOCKER_LAYER);
        assert_eq!(layer_type(DOCKER_LAYER, false), LAYER_TAR);
        assert_eq!(layer_type("zstd", false), format!("{LAYER_TAR}+zstd"));
    }

    #[test]
    fn queries_append() {
        assert_eq!(
            with_query("http://h/u/1", "digest=x"),
            "http://h/u/1?digest=x"
        );
        assert_eq!(
            with_query("http://h/u/1?_state=a", "digest=x"),
            "http://h/u/1?_state=a&digest=x"
        );
    }
}
