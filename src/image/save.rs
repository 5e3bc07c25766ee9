//! [`Graph::save`]: images out of the store, as an OCI image layout
//! directory or a docker archive (a tar `docker load` and skopeo read).
//!
//! Layer blobs are the layers' exact tars ([`Layer::diff`], reassembled
//! from their tar-split records), so their diff IDs are the ones the
//! configs list. Each image's config is written byte for byte as it was
//! loaded, and so is its manifest wherever the layer blobs it lists come
//! out byte for byte too (uncompressed, or as they were loaded by lamina
//! itself); otherwise a new OCI manifest lists the blobs written.
//!
//! Compression: gzip at level 1 (as `pigz -1`: a save is usually on its
//! way to a `load`, where the size matters less than the time) and zstd at
//! level 3, on two workers, one layer each. Uncompressed layers of a
//! docker archive stream straight from reassembly into the tar; compressed
//! ones are compressed first into the store's `tmp/`, since a tar header
//! (which comes first) must give a blob's digest-derived name and size.
//!
//! A docker archive lists its metadata (`manifest.json`, `index.json`,
//! configs, manifests) before the layers, and the layers base first, so a
//! reader can apply each layer as it arrives (`Graph::load` from a pipe
//! does: see `stream`); it is both a docker archive and an OCI layout (what
//! Docker 25's `docker save` writes). Written to a path, the archive or
//! the layout appears whole or not at all (a temporary name, renamed).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::Digest;

use crate::archive::compression::Compression;
use crate::archive::digest::{hex_id, HashingWriter};
use crate::archive::tar_writer::{EntryType, Header, TarWriter};
use crate::error::{Error, IoContext, Result};
use crate::graph::chain::{Counted, Progress};
use crate::graph::images::{build_manifest, Image, LAYER_TAR};
use crate::graph::{Graph, Layer};
use crate::ids;

/// The format [`Graph::save`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// An OCI image layout directory.
    Oci,
    /// A docker archive: a tar `docker load` reads.
    DockerArchive,
}

/// Where [`Graph::save`] writes.
pub enum SaveTarget<'a> {
    /// A path: the layout directory (which must not exist, or be empty),
    /// or the archive file (replaced).
    Path(&'a Path),
    /// A stream (docker archives only).
    Writer(&'a mut (dyn Write + Send)),
}

const INDEX_V1: &str = "application/vnd.oci.image.index.v1+json";
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn media_type(c: Compression) -> String {
    match c {
        Compression::None => LAYER_TAR.to_owned(),
        Compression::Gzip => format!("{LAYER_TAR}+gzip"),
        Compression::Zstd => format!("{LAYER_TAR}+zstd"),
    }
}

/// A layer blob: its descriptor, and where its bytes are.
#[derive(Clone)]
struct Blob {
    media_type: String,
    digest: String,
    size: u64,
    /// A file holding it, or `None`: the layer's tar, reassembled on write.
    file: Option<PathBuf>,
}

/// What one image becomes.
struct Out {
    names: Vec<String>,
    config: Vec<u8>,
    manifest: Vec<u8>,
    layers: Vec<String>,
}

/// `layer`'s tar, compressed with `c` (gzip by igzip at level 1, zstd level 3), into
/// `out`, the tar's bytes counted into `progress`; `out` back, finished.
pub(crate) fn encode_diff<W: Write>(
    layer: &Layer,
    c: Compression,
    out: W,
    progress: Option<&Progress<'_>>,
    werr: impl Fn(std::io::Error) -> Error,
) -> Result<W> {
    Ok(match c {
        Compression::None => {
            let mut w = Counted::new(out, progress);
            layer.diff(&mut w)?;
            w.into_inner()
        }
        Compression::Gzip => {
            let enc = crate::archive::gzip_writer::GzipWriter::new(out);
            let mut w = Counted::new(enc, progress);
            layer.diff(&mut w)?;
            w.into_inner().finish().map_err(werr)?
        }
        Compression::Zstd => {
            let enc = zstd::stream::write::Encoder::new(out, 3).map_err(&werr)?;
            let mut w = Counted::new(enc, progress);
            layer.diff(&mut w)?;
            w.into_inner().finish().map_err(werr)?
        }
    })
}

/// `layer`'s blob, compressed with `c`, into `out`: `out` back, and the
/// blob's digest and size. An uncompressed registered layer's tar is
/// checked against its diff ID as it is reassembled, and that is the
/// blob's digest: it is not hashed a second time.
pub(crate) fn encode_blob<W: Write>(
    layer: &Layer,
    c: Compression,
    out: W,
    progress: Option<&Progress<'_>>,
    werr: impl Fn(std::io::Error) -> Error,
) -> Result<(W, String, u64)> {
    if c == Compression::None && layer.diff_is_checked() {
        let mut w = Counted::new(out, progress);
        let (n, digest) = layer.diff_checked(&mut w)?;
        let digest = digest.ok_or_else(|| {
            Error::Internal(format!(
                "layer {}: its tar-split record went away while its tar was written",
                layer.id()
            ))
        })?;
        return Ok((w.into_inner(), digest, n));
    }
    let hashing = HashingWriter {
        inner: out,
        hasher: sha2::Sha256::new(),
        size: 0,
    };
    let HashingWriter {
        inner,
        hasher,
        size,
    } = encode_diff(layer, c, hashing, progress, werr)?;
    Ok((inner, hex_id(&hasher.finalize()), size))
}

/// Write `layer`'s blob, compressed with `c`, into `dir` as `<hex>`;
/// its digest and size.
fn write_blob(
    layer: &Layer,
    c: Compression,
    dir: &Path,
    n: usize,
    progress: Option<&Progress<'_>>,
) -> Result<Blob> {
    let tmp = dir.join(format!(".layer-{n}"));
    let f = File::create(&tmp).at("create", &tmp)?;
    let werr = |e: std::io::Error| Error::io("write", &tmp, e);
    let out = BufWriter::with_capacity(1 << 20, f);
    let (inner, digest, size) = encode_blob(layer, c, out, progress, werr)?;
    let f = inner.into_inner().map_err(|e| werr(e.into_error()))?;
    f.sync_all().at("fsync", &tmp)?;
    let path = dir.join(&digest[7..]);
    std::fs::rename(&tmp, &path).at("rename", &path)?;
    if let Some(p) = progress {
        p.layer_done();
    }
    Ok(Blob {
        media_type: media_type(c),
        digest,
        size,
        file: Some(path),
    })
}

/// Write the blobs of `layers` into `dir` on up to two workers.
fn write_blobs(
    layers: &[Layer],
    c: Compression,
    dir: &Path,
    progress: Option<&Progress<'_>>,
) -> Result<Vec<Blob>> {
    crate::graph::chain::in_order(
        layers.len(),
        crate::graph::chain::APPLY_WORKERS,
        "a layer save worker",
        |k| write_blob(&layers[k], c, dir, k, progress),
    )
}

/// The manifest `img` is saved under: the original where it lists exactly
/// the blobs of its layers (from `by_id`, layer id to blob), else a new one.
fn manifest_for(img: &Image, by_id: &HashMap<&str, &Blob>) -> Vec<u8> {
    let rec = img.record();
    let blobs: Vec<&Blob> = rec.layers.iter().map(|id| by_id[id.as_str()]).collect();
    let same = serde_json::from_str::<Value>(&rec.manifest)
        .ok()
        .and_then(|m| {
            let ls = m.get("layers")?.as_array()?.clone();
            let cfg = m.get("config")?.get("digest")?.as_str()?
                == ids::sha256_digest(rec.config.as_bytes());
            Some(
                cfg && ls.len() == blobs.len()
                    && ls.iter().zip(&blobs).all(|(l, b)| {
                        l.get("digest").and_then(Value::as_str) == Some(b.digest.as_str())
                            && l.get("size").and_then(Value::as_u64) == Some(b.size)
                    }),
            )
        })
        .unwrap_or(false);
    if same {
        return rec.manifest.as_bytes().to_vec();
    }
    let descs: Vec<(String, String, u64)> = blobs
        .iter()
        .map(|b| (b.media_type.clone(), b.digest.clone(), b.size))
        .collect();
    build_manifest(rec.config.as_bytes(), &descs)
}

/// The index entry that names `manifest` `name` (a full reference), with
/// the annotations containerd and the OCI layout read names from.
fn index_entry(media_type: &str, manifest: &[u8], name: &str) -> Value {
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    json!({
        "mediaType": media_type,
        "digest": ids::sha256_digest(manifest),
        "size": manifest.len(),
        "annotations": {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": tag,
        },
    })
}

/// A name next to `path` for its temporary twin.
fn temp_twin(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} names no file", path.display())))?;
    let mut t = std::ffi::OsString::from(".");
    t.push(name);
    t.push(format!(".lamina-tmp-{}", std::process::id()));
    Ok(path.with_file_name(t))
}

impl Graph {
    /// Save the images named `names` (see the module docs) to `target`
    /// in `format`, layers compressed with `compression`.
    pub fn save(
        &self,
        names: &[&str],
        target: SaveTarget<'_>,
        format: SaveFormat,
        compression: Compression,
        progress: Option<&Progress<'_>>,
    ) -> Result<()> {
        self.check_open()?;
        if names.is_empty() {
            return Err(Error::InvalidArgument("no image to save".into()));
        }
        let mut images: Vec<Image> = Vec::new();
        for n in names {
            let img = self.image(n)?;
            if !images.iter().any(|i| i.name() == img.name()) {
                images.push(img);
            }
        }
        let mut layers: Vec<Layer> = Vec::new();
        for img in &images {
            for l in img.layers()? {
                if !layers.iter().any(|x| x.id() == l.id()) {
                    layers.push(l);
                }
            }
        }
        if let Some(p) = progress {
            let total = layers.iter().filter_map(Layer::tar_size).sum();
            p.add_total(total, layers.len());
        }
        match (format, target) {
            (SaveFormat::Oci, SaveTarget::Path(p)) => {
                self.save_oci(&images, &layers, p, compression, progress)
            }
            (SaveFormat::Oci, SaveTarget::Writer(_)) => Err(Error::InvalidArgument(
                "an OCI layout is a directory: give a path".into(),
            )),
            (SaveFormat::DockerArchive, SaveTarget::Path(p)) => {
                let tmp = temp_twin(p)?;
                let r = (|| {
                    let f = File::create(&tmp).at("create", &tmp)?;
                    let mut w = BufWriter::with_capacity(1 << 20, f);
                    self.save_docker(&images, &layers, &mut w, compression, progress)?;
                    let f = w
                        .into_inner()
                        .map_err(|e| Error::io("write", &tmp, e.into_error()))?;
                    f.sync_all().at("fsync", &tmp)?;
                    std::fs::rename(&tmp, p).at("rename", p)
                })();
                if r.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                r
            }
            (SaveFormat::DockerArchive, SaveTarget::Writer(w)) => {
                self.save_docker(&images, &layers, w, compression, progress)
            }
        }
    }

    fn save_oci(
        &self,
        images: &[Image],
        layers: &[Layer],
        dst: &Path,
        c: Compression,
        progress: Option<&Progress<'_>>,
    ) -> Result<()> {
        match std::fs::read_dir(dst) {
            Ok(mut d) => {
                if d.next().is_some() {
                    return Err(Error::io(
                        "save",
                        dst,
                        std::io::Error::from_raw_os_error(libc::ENOTEMPTY),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("open", dst, e)),
        }
        let tmp = temp_twin(dst)?;
        let r = (|| {
            let blobs_dir = tmp.join("blobs/sha256");
            std::fs::create_dir_all(&blobs_dir).at("mkdir", &blobs_dir)?;
            let blobs = write_blobs(layers, c, &blobs_dir, progress)?;
            let by_id: HashMap<&str, &Blob> =
                layers.iter().map(|l| l.id()).zip(blobs.iter()).collect();
            let mut manifests = Vec::new();
            for img in images {
                let manifest = manifest_for(img, &by_id);
                let config = img.record().config.as_bytes();
                for data in [config, &manifest[..]] {
                    let p = blobs_dir.join(&ids::sha256_digest(data)[7..]);
                    std::fs::write(&p, data).at("write", &p)?;
                }
                manifests.push(index_entry(&img.record().media_type, &manifest, img.name()));
            }
            let index = json!({"schemaVersion": 2, "mediaType": INDEX_V1, "manifests": manifests});
            let index = serde_json::to_vec(&index).expect("an index always encodes");
            for (name, data) in [("index.json", &index[..]), ("oci-layout", OCI_LAYOUT)] {
                let p = tmp.join(name);
                std::fs::write(&p, data).at("write", &p)?;
            }
            let dir = File::open(&tmp).at("open", &tmp)?;
            rustix::fs::syncfs(&dir).at("syncfs", &tmp)?;
            if dst.exists() {
                std::fs::remove_dir(dst).at("rmdir", dst)?;
            }
            std::fs::rename(&tmp, dst).at("rename", dst)?;
            if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
                crate::fs::private::fsync_dir(parent)?;
            }
            Ok(())
        })();
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        r
    }

    fn save_docker(
        &self,
        images: &[Image],
        layers: &[Layer],
        out: &mut dyn Write,
        c: Compression,
        progress: Option<&Progress<'_>>,
    ) -> Result<()> {
        // Compressed blobs are made first (their names and sizes go in
        // headers that come before them); plain ones stream later.
        let staging;
        let blobs: Vec<Blob> = if c == Compression::None {
            layers
                .iter()
                .map(|l| Blob {
                    media_type: LAYER_TAR.to_owned(),
                    digest: l.diff_id().unwrap_or_default().to_owned(),
                    size: l.tar_size().unwrap_or_default(),
                    file: None,
                })
                .collect()
        } else {
            let layout = self.inner.store.layout();
            staging = layout.stage(&self.inner.store.read_lock()?, "save")?;
            write_blobs(layers, c, staging.path(), progress)?
        };
        let by_id: HashMap<&str, &Blob> = layers.iter().map(|l| l.id()).zip(blobs.iter()).collect();
        // Images that are one manifest under several names are one entry.
        let mut outs: BTreeMap<Vec<u8>, Out> = BTreeMap::new();
        let mut order: Vec<Vec<u8>> = Vec::new();
        for img in images {
            let manifest = manifest_for(img, &by_id);
            let e = outs.entry(manifest.clone()).or_insert_with(|| {
                order.push(manifest.clone());
                Out {
                    names: Vec::new(),
                    config: img.record().config.as_bytes().to_vec(),
                    manifest,
                    layers: img.record().layers.clone(),
                }
            });
            e.names.push(img.name().to_owned());
        }
        let blob_name = |d: &str| format!("blobs/sha256/{}", &d[7..]);
        let mut docker_manifest = Vec::new();
        let mut index = Vec::new();
        for m in &order {
            let o = &outs[m];
            docker_manifest.push(json!({
                "Config": blob_name(&ids::sha256_digest(&o.config)),
                "RepoTags": o.names,
                "Layers": o.layers.iter().map(|id| blob_name(&by_id[id.as_str()].digest)).collect::<Vec<_>>(),
            }));
            for n in &o.names {
                index.push(index_entry(
                    crate::graph::images::MANIFEST_V1,
                    &o.manifest,
                    n,
                ));
            }
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": INDEX_V1, "manifests": index,
        }))
        .expect("an index always encodes");
        let docker_manifest =
            serde_json::to_vec(&Value::Array(docker_manifest)).expect("a list always encodes");

        let werr = |e: std::io::Error| Error::io("write", "<docker archive>", e);
        let mut tw = TarWriter::new(out);
        for d in ["blobs/", "blobs/sha256/"] {
            tw.write_header(&header(d, EntryType::Dir, 0))
                .map_err(werr)?;
        }
        let small = |tw: &mut TarWriter<&mut dyn Write>, name: &str, data: &[u8]| {
            tw.write_header(&header(name, EntryType::File, data.len() as u64))?;
            tw.write_payload(&mut &data[..], data.len() as u64, &mut [0u8; 64 * 1024])
        };
        small(&mut tw, "oci-layout", OCI_LAYOUT).map_err(werr)?;
        small(&mut tw, "index.json", &index).map_err(werr)?;
        small(&mut tw, "manifest.json", &docker_manifest).map_err(werr)?;
        let mut written: std::collections::HashSet<String> = Default::default();
        for m in &order {
            let o = &outs[m];
            for data in [&o.config, &o.manifest] {
                let d = ids::sha256_digest(data);
                if written.insert(d.clone()) {
                    small(&mut tw, &blob_name(&d), data).map_err(werr)?;
                }
            }
        }
        let mut buf = vec![0u8; 1 << 20];
        for (l, b) in layers.iter().zip(&blobs) {
            if !written.insert(b.digest.clone()) {
                continue;
            }
            tw.write_header(&header(&blob_name(&b.digest), EntryType::File, b.size))
                .map_err(werr)?;
            match &b.file {
                Some(p) => {
                    let mut f = File::open(p).at("open", p)?;
                    tw.write_payload(&mut f, b.size, &mut buf).map_err(werr)?;
                }
                None => {
                    let mut w = Counted::new(Payload(&mut tw), progress);
                    let n = l.diff(&mut w)?;
                    if n != b.size {
                        return Err(Error::corrupt(
                            self.layer_dir(l.id())?,
                            format!("the layer's tar is {n} bytes, its record says {}", b.size),
                        ));
                    }
                    tw.pad(n).map_err(werr)?;
                    if let Some(p) = progress {
                        p.layer_done();
                    }
                }
            }
        }
        tw.finish().map_err(werr)?;
        Ok(())
    }
}

/// Payload bytes into a tar writer (the header came before).
struct Payload<'a, 'w>(&'a mut TarWriter<&'w mut dyn Write>);

impl Write for Payload<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.put(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn header(path: &str, kind: EntryType, size: u64) -> Header {
    Header {
        path: path.as_bytes().to_vec(),
        kind,
        mode: if kind == EntryType::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        size,
        mtime: (0, 0),
        linkname: Vec::new(),
        dev: (0, 0),
        xattrs: Vec::new(),
    }
}
