//! [`Graph::load`]: the images of an OCI layout or a docker archive into
//! the store (see the module docs of [`super`] for the formats and for
//! what happens to a stream whose metadata comes last).

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::archive::compression::{self, Compression};
use crate::error::{Error, IoContext, Result};
use crate::graph::chain::{ChainLayer, Counted, Progress};
use crate::graph::images::{build_manifest, Image, ImageRecord, LAYER_TAR, MANIFEST_V1};
use crate::graph::{Graph, Layer, Timestamp};
use crate::ids;
use crate::image::files::Files;
use crate::image::parse::{add_repo_tags, find_images, FoundImage, FoundLayer};
use crate::image::verify::Verified;

/// Where [`Graph::load`] reads from.
pub enum LoadSource<'a> {
    /// An OCI image layout directory, or a tar file (of an OCI layout, or
    /// written by docker save), plain or compressed.
    Path(&'a Path),
    /// An open tar file: read in place where it is a regular file (it can
    /// seek), else as a stream.
    File(File),
    /// A tar stream (a pipe): see the module docs of [`super`].
    Stream(&'a mut (dyn Read + Send)),
    /// A tar stream, named `.1` in messages (`<bytes>`, `<file object>`).
    NamedStream(&'a mut (dyn Read + Send), &'a str),
}

/// The first bytes of a file, to tell a plain tar from a compressed one.
fn sniff(f: &File, what: &Path) -> Result<Compression> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        match f.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", what, e)),
        }
    }
    compression::detect(&head[..got])
}

impl Graph {
    /// The files of `source`: a layout directory or a seekable plain tar
    /// read in place; anything else read as a stream (see `stream`).
    fn image_files<'x, 'a: 'x, 'p: 'x>(
        &self,
        source: LoadSource<'a>,
        progress: Option<&'p Progress<'p>>,
    ) -> Result<Files<'x>> {
        let (file, what) = match source {
            LoadSource::Path(p) => {
                let m = std::fs::metadata(p).at("stat", p)?;
                if m.is_dir() {
                    return Files::open_dir(p);
                }
                (File::open(p).at("open", p)?, p.display().to_string())
            }
            LoadSource::File(f) => (f, "<file object>".to_owned()),
            LoadSource::Stream(s) => {
                // `docker save app | gzip` is a stream too.
                let plain = compression::decompress(s)?;
                return self.streamed(plain, "<stream>", progress);
            }
            LoadSource::NamedStream(s, what) => {
                let plain = compression::decompress(s)?;
                return self.streamed(plain, what, progress);
            }
        };
        let shown = Path::new(&what).to_owned();
        let regular = file.metadata().at("stat", &shown)?.is_file();
        if regular && sniff(&file, &shown)? == Compression::None {
            return Files::index_tar(file, &what);
        }
        let plain = compression::decompress(file)?;
        self.streamed(plain, &what, progress)
    }

    fn streamed<'x, 'a: 'x, 'p: 'x>(
        &self,
        src: Box<dyn Read + Send + 'a>,
        what: &str,
        progress: Option<&'p Progress<'p>>,
    ) -> Result<Files<'x>> {
        let layout = self.inner.store.layout();
        let spool = layout.stage(&self.inner.store.read_lock()?, "spool")?;
        let src = Box::new(Counted::source(src, progress));
        Ok(Files::stream_tar(src, spool, what))
    }

    /// Load the images of an OCI image layout (a directory, or a tar of
    /// one) or of a docker archive (what `docker save` writes, legacy or
    /// OCI-style), from a path, an open file or a stream.
    ///
    /// Every blob is checked against its descriptor (size and digest)
    /// while it streams, and every layer's diff ID against the config's
    /// `rootfs.diff_ids`; layers already in the store are not applied
    /// again. A failure leaves the store as it was: no new layer, no name.
    /// Once all layers are in, each image gets its names (replacing images
    /// of the same names); an image with no name is named by its manifest
    /// digest (`sha256:<hex>`). Returns one [`Image`] per name.
    pub fn load(
        &self,
        source: LoadSource<'_>,
        progress: Option<&Progress<'_>>,
    ) -> Result<Vec<Image>> {
        self.check_open()?;
        let files = self.image_files(source, progress)?;
        let mut found = find_images(&files)?;
        if found.is_empty() {
            return Err(Error::Archive(format!("{}: no image in it", files.what())));
        }
        if let Some(p) = progress {
            p.start_applying();
        }
        let before: HashSet<String> = self.inner.store.layout().layer_ids()?.into_iter().collect();
        let mut records = Vec::new();
        let mut landed: Vec<String> = Vec::new();
        let result = (|| {
            let mut chains = Vec::with_capacity(found.len());
            for img in &found {
                let layers = self.register_chain(None, chain_of(&files, img), progress)?;
                for l in &layers {
                    if !before.contains(l.id()) && !landed.iter().any(|x| x == l.id()) {
                        landed.push(l.id().to_owned());
                    }
                }
                chains.push(layers);
            }
            // A stream is read to its end: a truncated tail is an error,
            // and a pipe's writer is not left blocked.
            files.finish()?;
            add_repo_tags(&files, &mut found)?;
            for (img, layers) in found.iter().zip(&chains) {
                records.extend(records_of(img, layers)?);
            }
            let mut out = Vec::with_capacity(records.len());
            for rec in std::mem::take(&mut records) {
                out.push(self.put_image(rec)?);
            }
            Ok(out)
        })();
        if result.is_err() {
            // What this load added goes again, top first; a layer someone
            // else took meanwhile stays (delete refuses it).
            for id in landed.iter().rev() {
                let _ = self.delete_id(id);
            }
        }
        result
    }
}

/// The layers of `img` as [`Graph::register_chain`] takes them: each
/// blob opened on demand and checked against its descriptor as it streams.
fn chain_of<'f>(files: &'f Files, img: &FoundImage) -> Vec<ChainLayer<'f>> {
    img.layers
        .iter()
        .map(|l| {
            let FoundLayer {
                path,
                digest,
                diff_id,
            } = l.clone();
            let label = format!("{}: {path}", files.what());
            // A legacy archive's layer has no descriptor: its file's size.
            let size = digest
                .as_ref()
                .map(|d| d.1)
                .or_else(|| files.open(&path).ok().map(|o| o.size));
            let open_label = label.clone();
            let diff_id2 = diff_id.clone();
            ChainLayer {
                open: Box::new(move || open_layer(files, &path, digest, &diff_id2, &open_label)),
                diff_id,
                label,
                size,
            }
        })
        .collect()
}

fn open_layer<'f>(
    files: &'f Files,
    path: &str,
    digest: Option<(String, u64)>,
    diff_id: &str,
    label: &str,
) -> Result<Box<dyn Read + Send + 'f>> {
    let o = files.open(path)?;
    let Some((digest, size)) = digest else {
        // A legacy docker archive's layer: its diff ID is its check.
        return Ok(o.reader);
    };
    Ok(Box::new(Verified::new_layer(
        o.reader, label, &digest, size, diff_id,
    )))
}

/// The records of a loaded image, one per name.
fn records_of(img: &FoundImage, layers: &[Layer]) -> Result<Vec<ImageRecord>> {
    let (manifest, media_type) = match &img.manifest {
        Some((m, t)) => (m.clone(), t.clone()),
        None => {
            // A legacy docker archive has no manifest: the one made here
            // lists the layers as lamina gives them back (uncompressed).
            let descs: Vec<(String, String, u64)> = layers
                .iter()
                .map(|l| {
                    (
                        LAYER_TAR.to_owned(),
                        l.diff_id().unwrap_or_default().to_owned(),
                        l.tar_size().unwrap_or_default(),
                    )
                })
                .collect();
            (build_manifest(&img.config, &descs), MANIFEST_V1.to_owned())
        }
    };
    let digest = ids::sha256_digest(&manifest);
    let text = |b: &[u8], what: &str| {
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::Archive(format!("the image's {what} is not UTF-8 JSON")))
    };
    let (manifest, config) = (text(&manifest, "manifest")?, text(&img.config, "config")?);
    let mut names = img.names.clone();
    if names.is_empty() {
        names.push(digest.clone());
    }
    Ok(names
        .into_iter()
        .map(|name| ImageRecord {
            name,
            layers: layers.iter().map(|l| l.id().to_owned()).collect(),
            digest: digest.clone(),
            media_type: media_type.clone(),
            manifest: manifest.clone(),
            config: config.clone(),
            created: Timestamp::now(),
            source: None,
        })
        .collect())
}
