//! `docker commit` for a container made from an image: its changes become
//! a new layer on the image, and a new image gets the image's config with
//! the caller's changes, one history entry more and `rootfs.diff_ids`
//! extended ([`Graph::tag`] writes the diff ids from the layer chain).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::changes::{apply_changes, ConfigChange};
use crate::error::{Error, Result};
use crate::graph::images::{config_bytes, host_arch};
use crate::graph::{Graph, Image, Layer, Metadata, Progress, Timestamp};
use crate::ids;

/// What [`Graph::commit_image`] writes besides the layer.
#[derive(Debug, Clone, Default)]
pub struct CommitImage {
    /// Config changes, applied in order.
    pub changes: Vec<ConfigChange>,
    /// The history entry's `created_by` (what made the layer).
    pub created_by: Option<String>,
    /// The config's and the history entry's `author`.
    pub author: Option<String>,
    /// The history entry's `comment`.
    pub comment: Option<String>,
}

/// `created` of the new image: `SOURCE_DATE_EPOCH` when set (reproducible
/// builds), else now.
fn created() -> Result<Timestamp> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => {
            let secs: u64 = s.trim().parse().map_err(|_| {
                Error::InvalidArgument(format!(
                    "SOURCE_DATE_EPOCH={s:?} is not a number of seconds"
                ))
            })?;
            Ok(Timestamp::from(UNIX_EPOCH + Duration::from_secs(secs)))
        }
        Err(_) => Ok(Timestamp::now()),
    }
}

/// Go's `time.RFC3339Nano`, which Docker writes: trailing zeros of the
/// fraction dropped (`2023-11-14T22:13:20Z`, `...:20.5Z`).
fn go_rfc3339_nano(t: Timestamp) -> String {
    let s = t.to_string();
    match s.strip_suffix('Z').and_then(|b| b.split_once('.')) {
        Some((whole, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{frac}Z")
            }
        }
        None => s,
    }
}

impl Graph {
    /// The config a commit of `container` starts from: that of the image it
    /// was made from (found by digest under any name), else of an image
    /// whose top layer is the container's image layer, else a new one.
    fn base_config(
        &self,
        container: &Layer,
        image_layer: Option<&str>,
    ) -> Result<Map<String, Value>> {
        let images = self.images()?;
        let found = container
            .image_digest()
            .and_then(|d| images.iter().find(|i| i.digest() == d))
            .or_else(|| {
                image_layer.and_then(|top| {
                    images
                        .iter()
                        .find(|i| i.record().layers.last().map(String::as_str) == Some(top))
                })
            });
        match found {
            Some(img) => match img.config()? {
                Value::Object(m) => Ok(m),
                _ => Err(Error::Archive(format!(
                    "image {}: the config is not a JSON object",
                    img.name()
                ))),
            },
            None => {
                let mut m = Map::new();
                m.insert("architecture".into(), host_arch().into());
                m.insert("os".into(), "linux".into());
                m.insert("config".into(), json!({}));
                Ok(m)
            }
        }
    }

    /// Commit the writable `container` as a new layer and tag an image
    /// `name` on it whose config is inherited and changed by `opts`. The
    /// changes are checked before anything is written; if tagging fails the
    /// new layer is removed again.
    pub fn commit_image(&self, container: &Layer, name: &str, opts: &CommitImage) -> Result<Image> {
        self.commit_image_with(container, name, opts, None)
    }

    /// [`Graph::commit_image`], its layer counted into `progress` as
    /// [`Graph::commit_with`] counts it.
    pub fn commit_image_with(
        &self,
        container: &Layer,
        name: &str,
        opts: &CommitImage,
        progress: Option<&Progress<'_>>,
    ) -> Result<Image> {
        self.check_open()?;
        if !container.writable() {
            return Err(Error::InvalidArgument(format!(
                "layer {} is read-only; commit_image takes a container (a writable layer)",
                container.id()
            )));
        }
        let created = go_rfc3339_nano(created()?);
        let image_layer = self.commit_target(container)?;
        let mut config = self.base_config(container, image_layer.as_deref())?;
        let mut run = match config.remove("config") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        apply_changes(&mut run, &opts.changes)?;
        config.insert("config".into(), Value::Object(run));
        config.insert("created".into(), created.clone().into());
        if let Some(a) = &opts.author {
            config.insert("author".into(), a.clone().into());
        }
        let mut entry = Map::new();
        entry.insert("created".into(), created.into());
        entry.insert(
            "created_by".into(),
            opts.created_by.clone().unwrap_or_default().into(),
        );
        if let Some(a) = &opts.author {
            entry.insert("author".into(), a.clone().into());
        }
        if let Some(c) = &opts.comment {
            entry.insert("comment".into(), c.clone().into());
        }
        let history = config
            .entry("history")
            .or_insert_with(|| Value::Array(Vec::new()));
        match history {
            Value::Array(a) => a.push(Value::Object(entry)),
            _ => *history = Value::Array(vec![Value::Object(entry)]),
        }
        // What `tag` will write, checked before the layer is made: its
        // `rootfs` lists as many diff IDs, each as long.
        let depth = match &image_layer {
            Some(top) => self.layer(top)?.chain()?.len() + 1,
            None => 1,
        };
        let placeholder = Value::from(ids::sha256_digest(b""));
        config_bytes(config.clone(), vec![placeholder; depth])?;
        let layer = self.commit_with(container, Metadata::new(), progress)?;
        match self.tag(layer.id(), name, Some(Value::Object(config))) {
            Ok(img) => Ok(img),
            Err(e) => {
                // A layer another image already shares is not ours to remove.
                if !self
                    .images()?
                    .iter()
                    .any(|i| i.record().layers.iter().any(|l| l == layer.id()))
                {
                    let _ = self.delete(layer.id());
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_docker_writes_them() {
        let at = |secs, nanos| go_rfc3339_nano(Timestamp { secs, nanos });
        assert_eq!(at(1_700_000_000, 0), "2023-11-14T22:13:20Z");
        assert_eq!(at(1_700_000_000, 500_000_000), "2023-11-14T22:13:20.5Z");
        assert_eq!(at(1_700_000_000, 123), "2023-11-14T22:13:20.000000123Z");
    }
}
