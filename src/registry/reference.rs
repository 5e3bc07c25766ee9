//! Image references as Docker reads them (distribution/reference's
//! `ParseNormalizedNamed`): `[host[:port]/]path[:tag][@digest]`. The first
//! component is a registry host when it has a `.` or a `:` or is
//! `localhost`; otherwise the image is on `docker.io`, and a one-component
//! path gets `library/`. No tag and no digest is `:latest`.

use crate::error::{Error, Result};
use crate::ids;

/// Docker's default registry domain (a name, not an endpoint: see
/// [`super::client::endpoint_of`]).
pub const DOCKER_IO: &str = "docker.io";

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, e.g. `127.0.0.1:5000` or `docker.io`.
    pub host: String,
    /// The repository path, e.g. `library/debian`.
    pub repo: String,
    /// The tag, where given (or `latest` when neither tag nor digest is).
    pub tag: Option<String>,
    /// `sha256:<hex>`, where given: it pins the manifest.
    pub digest: Option<String>,
}

fn bad(r: &str, why: &str) -> Error {
    Error::InvalidArgument(format!("invalid image reference {r:?}: {why}"))
}

impl Reference {
    /// Parse `r`.
    pub fn parse(r: &str) -> Result<Reference> {
        let (rest, digest) = match r.split_once('@') {
            Some((n, d)) => {
                ids::validate_digest(d).map_err(|_| bad(r, "the digest is not sha256:<64 hex>"))?;
                (n, Some(d.to_owned()))
            }
            None => (r, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_owned())),
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = t.len() <= 128
                && t.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(bad(r, "a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
            }
        }
        let (host, path) = match name.split_once('/') {
            Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_owned(), p.to_owned())
            }
            _ => (DOCKER_IO.to_owned(), name.to_owned()),
        };
        let path = if host == DOCKER_IO && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && c.bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        if path.is_empty() || path.len() > 255 || !path.split('/').all(component_ok) {
            return Err(bad(
                r,
                "the repository is lowercase components of [a-z0-9._-] separated by /",
            ));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Ok(Reference {
            host,
            repo: path,
            tag,
            digest,
        })
    }

    /// What the manifest is fetched by: the digest where given, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The name of the image a pull of this reference makes:
    /// `host/repo:tag`; a reference by digest alone names the image by its
    /// manifest digest, as a load does for an image with no name.
    pub fn image_name(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}/{}:{t}", self.host, self.repo))
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(r: &str) -> (String, String, Option<String>, Option<String>) {
        let x = Reference::parse(r).unwrap();
        (x.host, x.repo, x.tag, x.digest)
    }

    #[test]
    fn as_docker_normalizes() {
        let d = format!("sha256:{}", "a".repeat(64));
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            p("debian"),
            (
                "docker.io".into(),
                "library/debian".into(),
                s("latest"),
                None
            )
        );
        assert_eq!(
            p("user/app:1"),
            ("docker.io".into(), "user/app".into(), s("1"), None)
        );
        assert_eq!(
            p("localhost/app"),
            ("localhost".into(), "app".into(), s("latest"), None)
        );
        assert_eq!(
            p("127.0.0.1:5000/a/b:v1.2"),
            ("127.0.0.1:5000".into(), "a/b".into(), s("v1.2"), None)
        );
        assert_eq!(
            p(&format!("host.test/app@{d}")),
            ("host.test".into(), "app".into(), None, Some(d.clone()))
        );
        assert_eq!(
            p(&format!("host.test:443/app:t@{d}")),
            (
                "host.test:443".into(),
                "app".into(),
                s("t"),
                Some(d.clone())
            )
        );
        assert_eq!(
            Reference::parse("127.0.0.1:5000/a:t").unwrap().to_string(),
            "127.0.0.1:5000/a:t"
        );
        for bad in [
            "",
            "App",
            "a//b",
            "a:",
            "a@sha256:12",
            "host.test/a:-x",
            "a/-b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
