//! Load and save round trips on the vfs driver (no mounts), and the
//! failures that must leave the store as it was.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::archive::compression::Compression;
use crate::error::Error;
use crate::graph::{Graph, Metadata};
use crate::ids::sha256_digest;

/// A layer tar of `files` (path, content), and of whiteouts for `gone`.
fn layer_tar(files: &[(&str, &str)], gone: &[&str]) -> Vec<u8> {
    let mut out = crate::testutil::tar_of(files);
    if gone.is_empty() {
        return out;
    }
    // Whiteouts appended before the trailer, as `.wh.<name>` entries.
    out.truncate(out.len() - 1024);
    let mut tw = crate::archive::tar_writer::TarWriter::new(Vec::new());
    for g in gone {
        let (dir, name) = g.rsplit_once('/').unwrap_or(("", g));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        tw.write_header(&crate::archive::tar_writer::Header {
            path: wh.into_bytes(),
            kind: crate::archive::tar_writer::EntryType::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: (0, 0),
            linkname: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        })
        .unwrap();
    }
    let tail = tw.finish().unwrap();
    out.extend_from_slice(&tail);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

struct Layout {
    dir: tempfile::TempDir,
}

impl Layout {
    fn put(&self, data: &[u8]) -> Value {
        let d = sha256_digest(data);
        let p = self.dir.path().join("blobs/sha256").join(&d[7..]);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
        json!({"digest": d, "size": data.len()})
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// An OCI layout with one image `app:1` of two layers (gzip, zstd).
fn oci_layout() -> (Layout, Vec<Vec<u8>>) {
    oci_layout_with(false)
}

/// [`oci_layout`]; with `bad_diff_id`, the config lies about the top layer.
fn oci_layout_with(bad_diff_id: bool) -> (Layout, Vec<Vec<u8>>) {
    let l = Layout {
        dir: tempfile::tempdir().unwrap(),
    };
    let base = layer_tar(&[("etc/os", "base\n"), ("bin/sh", "sh\n")], &[]);
    let top = layer_tar(&[("app/run", "run\n")], &["bin/sh"]);
    let blobs = [gzip(&base), zstd::encode_all(&top[..], 3).unwrap()];
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-05-06T07:08:09Z",
        "config": {"Cmd": ["/app/run"]},
        "rootfs": {"type": "layers", "diff_ids": [
            sha256_digest(&base),
            if bad_diff_id { sha256_digest(b"another layer") } else { sha256_digest(&top) },
        ]},
    }))
    .unwrap();
    let mut cd = l.put(&config);
    cd["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let layers: Vec<Value> = blobs
        .iter()
        .zip(["gzip", "zstd"])
        .map(|(b, c)| {
            let mut d = l.put(b);
            d["mediaType"] = format!("application/vnd.oci.image.layer.v1.tar+{c}").into();
            d
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cd, "layers": layers,
    }))
    .unwrap();
    let mut md = l.put(&manifest);
    md["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    md["annotations"] = json!({"org.opencontainers.image.ref.name": "app:1"});
    std::fs::write(
        l.path().join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [md]})).unwrap(),
    )
    .unwrap();
    std::fs::write(
        l.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    (l, vec![base, top])
}

fn store() -> (tempfile::TempDir, Graph) {
    let t = tempfile::tempdir().unwrap();
    let g = Graph::open(&t.path().join("s"), "vfs").unwrap();
    (t, g)
}

/// Nothing was added: no layer, no image, nothing in tmp/.
fn assert_untouched(g: &Graph) {
    assert!(g.layers().unwrap().is_empty());
    assert!(g.images().unwrap().is_empty());
    let tmp = g.root().join("tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[test]
fn loads_an_oci_layout_and_saves_it_back() {
    let (layout, tars) = oci_layout();
    let (_t, g) = store();
    let images = g.load(LoadSource::Path(layout.path()), None).unwrap();
    assert_eq!(images.len(), 1);
    let img = &images[0];
    assert_eq!(img.name(), "app:1");
    let layers = img.layers().unwrap();
    assert_eq!(layers.len(), 2);
    for (l, tar) in layers.iter().zip(&tars) {
        let mut out = Vec::new();
        l.diff(&mut out).unwrap();
        assert_eq!(&out, tar);
    }
    let root = g.root().join("layers").join(layers[1].id()).join("root");
    assert!(root.join("app/run").exists() && !root.join("bin/sh").exists());
    assert_eq!(img.config().unwrap()["config"]["Cmd"][0], "/app/run");
    assert_eq!(img.created(), "2024-05-06T07:08:09Z".parse().unwrap());
    let original = std::fs::read(layout.path().join("index.json")).unwrap();
    let index: Value = serde_json::from_slice(&original).unwrap();
    assert_eq!(img.digest(), index["manifests"][0]["digest"]);

    // Loading again applies nothing and names the same layers.
    let again = g.load(LoadSource::Path(layout.path()), None).unwrap();
    assert_eq!(again[0].record().layers, img.record().layers);
    assert_eq!(g.layers().unwrap().len(), 2);

    // A layer an image uses cannot be deleted; untagged, it can.
    assert!(matches!(
        g.delete(layers[1].id()),
        Err(Error::LayerInUse { .. })
    ));

    // Out as a docker archive (uncompressed) and back into a second store,
    // from the file (read in place) and from a stream (spooled).
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("app.tar");
    g.save(
        &["app:1"],
        SaveTarget::Path(&tar),
        SaveFormat::DockerArchive,
        Compression::None,
        None,
    )
    .unwrap();
    for stream in [false, true] {
        let (_t2, g2) = store();
        let loaded = if stream {
            let mut f = std::fs::File::open(&tar).unwrap();
            g2.load(LoadSource::Stream(&mut f), None).unwrap()
        } else {
            g2.load(LoadSource::Path(&tar), None).unwrap()
        };
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].name(), "app:1");
        assert_eq!(loaded[0].record().layers, img.record().layers);
        assert_eq!(loaded[0].record().config, img.record().config);
        assert_eq!(std::fs::read_dir(g2.root().join("tmp")).unwrap().count(), 0);
        // Saved uncompressed, then again: the manifest is kept byte for byte.
        let oci = out.path().join(format!("oci-{stream}"));
        g2.save(
            &["app:1"],
            SaveTarget::Path(&oci),
            SaveFormat::Oci,
            Compression::None,
            None,
        )
        .unwrap();
        let idx: Value =
            serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
        assert_eq!(idx["manifests"][0]["digest"], loaded[0].digest());
    }

    // gzip and zstd OCI layouts load back to the same layers.
    for c in [Compression::Gzip, Compression::Zstd] {
        let oci = out.path().join(format!("{c:?}"));
        g.save(&["app:1"], SaveTarget::Path(&oci), SaveFormat::Oci, c, None)
            .unwrap();
        let (_t3, g3) = store();
        let l = g3.load(LoadSource::Path(&oci), None).unwrap();
        assert_eq!(l[0].record().layers, img.record().layers);
        assert_eq!(l[0].record().config, img.record().config);
    }

    g.untag("app:1").unwrap();
    assert!(matches!(g.image("app:1"), Err(Error::ImageNotFound { .. })));
    g.delete(layers[1].id()).unwrap();
}

#[test]
fn tag_untag_and_names() {
    let (_t, g) = store();
    let tar = layer_tar(&[("a", "a")], &[]);
    let l = g
        .register(&mut &tar[..], None, None, Metadata::new())
        .unwrap();
    let img = g.tag(l.id(), "app", None).unwrap();
    assert_eq!(img.name(), "app:latest");
    assert_eq!(g.image("app").unwrap().digest(), img.digest());
    let cfg = img.config().unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"][0], l.diff_id().unwrap());
    // Tagging the same layers again keeps the manifest (as docker tag).
    let other = g.tag(&l.id()[..12], "other:2", None).unwrap();
    assert_eq!(other.digest(), img.digest());
    assert_eq!(
        g.images()
            .unwrap()
            .iter()
            .map(|i| i.name().to_owned())
            .collect::<Vec<_>>(),
        ["app:latest", "other:2"]
    );
    assert!(g.tag(l.id(), "../evil", None).is_err());
    let c = g
        .create(Some(l.id()), None, false, Metadata::new())
        .unwrap();
    assert!(matches!(
        g.tag(c.id(), "box:1", None),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(g.untag("nope"), Err(Error::ImageNotFound { .. })));
}

#[test]
fn bad_layouts_leave_the_store_unchanged() {
    let (layout, _) = oci_layout();
    let blobs = layout.path().join("blobs/sha256");
    // The largest blob is a layer: corrupt one byte.
    let mut files: Vec<_> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let layer = files.last().unwrap().clone();
    let good = std::fs::read(&layer).unwrap();

    type Break<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Break<'_>)> = vec![
        (
            "digest mismatch",
            Box::new(|| {
                let mut b = good.clone();
                let n = b.len() - 20;
                b[n] ^= 0xff;
                std::fs::write(&layer, b).unwrap();
            }),
        ),
        (
            "truncated",
            Box::new(|| std::fs::write(&layer, &good[..good.len() / 2]).unwrap()),
        ),
        (
            "missing",
            Box::new(|| std::fs::remove_file(&layer).unwrap()),
        ),
    ];
    for (want, break_it) in cases {
        break_it();
        let (_t, g) = store();
        let e = g.load(LoadSource::Path(layout.path()), None).unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::Archive(_)), "{want}: {m}");
        assert!(m.contains(want), "{want}: {m}");
        assert!(
            m.contains(&layer.file_name().unwrap().to_string_lossy()[..]),
            "{m}"
        );
        assert_untouched(&g);
        std::fs::write(&layer, &good).unwrap();
    }

    // A diff ID the layer does not have.
    let (_t, g) = store();
    let (liar, _) = oci_layout_with(true);
    let e = g.load(LoadSource::Path(liar.path()), None).unwrap_err();
    let m = e.to_string();
    assert!(
        matches!(e, Error::Archive(_)) && m.contains("diff ID"),
        "{m}"
    );
    assert_untouched(&g);

    let (_t2, g2) = store();
    g2.load(LoadSource::Path(layout.path()), None).unwrap();
    let tar = _t2.path().join("app.tar");
    g2.save(
        &["app:1"],
        SaveTarget::Path(&tar),
        SaveFormat::DockerArchive,
        Compression::None,
        None,
    )
    .unwrap();
    // A truncated archive.
    let whole = std::fs::read(&tar).unwrap();
    let cut = _t2.path().join("cut.tar");
    std::fs::write(&cut, &whole[..whole.len() - 3000]).unwrap();
    for stream in [false, true] {
        let e = if stream {
            let mut f = std::fs::File::open(&cut).unwrap();
            g.load(LoadSource::Stream(&mut f), None).unwrap_err()
        } else {
            g.load(LoadSource::Path(&cut), None).unwrap_err()
        };
        assert!(matches!(e, Error::Archive(_)), "{e}");
        assert_untouched(&g);
    }
}

#[test]
fn docker_manifest_paths_stay_inside() {
    let (layout, _) = oci_layout();
    let (_t, g) = store();
    std::fs::remove_file(layout.path().join("index.json")).unwrap();
    std::fs::write(
        layout.path().join("manifest.json"),
        r#"[{"Config": "../../etc/passwd", "RepoTags": ["x:1"], "Layers": []}]"#,
    )
    .unwrap();
    let e = g.load(LoadSource::Path(layout.path()), None).unwrap_err();
    assert!(matches!(e, Error::UnsafeArchive(_)), "{e}");
    assert_untouched(&g);
}

/// A tar of the layout `dir`: its metadata first, or last.
fn tar_of_dir(dir: &Path, metadata_first: bool) -> Vec<u8> {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p)
            } else {
                files.push(p)
            }
        }
    }
    // Metadata is JSON (the layout's files, manifests, configs); layers
    // are compressed tars, here in the manifest's order.
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(&m[7..])).unwrap())
            .unwrap();
    let order: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap()[7..].to_owned())
        .collect();
    files.sort_by_key(|p| {
        let json = serde_json::from_slice::<Value>(&std::fs::read(p).unwrap()).is_ok();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        let at = order.iter().position(|o| *o == name);
        (json != metadata_first, at, p.clone())
    });
    let mut tw = crate::archive::tar_writer::TarWriter::new(Vec::new());
    for p in files {
        let data = std::fs::read(&p).unwrap();
        let name = p.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
        tw.write_header(&crate::archive::tar_writer::Header {
            path: name.into_bytes(),
            kind: crate::archive::tar_writer::EntryType::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: data.len() as u64,
            mtime: (0, 0),
            linkname: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        })
        .unwrap();
        tw.write_payload(&mut &data[..], data.len() as u64, &mut [0u8; 4096])
            .unwrap();
    }
    tw.finish().unwrap()
}

#[test]
fn a_stream_with_its_metadata_first_is_not_spooled() {
    let (layout, _) = oci_layout();
    let mut kept = Vec::new();
    for metadata_first in [true, false] {
        let tar = tar_of_dir(layout.path(), metadata_first);
        let (_t, g) = store();
        let spool = g
            .inner
            .store
            .layout()
            .stage(&g.inner.store.read_lock().unwrap(), "spool")
            .unwrap();
        let files = files::Files::stream_tar(Box::new(std::io::Cursor::new(tar)), spool, "t");
        let found = parse::find_images(&files).unwrap();
        let mut layer_bytes = 0;
        for l in &found[0].layers {
            let mut r = files.open(&l.path).unwrap().reader;
            layer_bytes += std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        }
        files.finish().unwrap();
        kept.push((files.kept(), layer_bytes));
    }
    // Metadata first: the layers stream straight through, nothing of
    // them kept; metadata last: every layer was kept until it was known.
    let ((first, layers), (last, _)) = (kept[0], kept[1]);
    let metadata: u64 = ["index.json", "oci-layout"]
        .iter()
        .map(|f| std::fs::metadata(layout.path().join(f)).unwrap().len())
        .sum::<u64>()
        + 2048; // and the manifest and config blobs
    assert!(first < metadata, "{first} {metadata}");
    assert!(last + 64 >= first + layers, "{first} {last} {layers}");
}
