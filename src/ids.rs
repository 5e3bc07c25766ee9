//! Layer ids, OCI chain ids, and prefix lookup.
//!
//! A layer id names a directory under `layers/`, so it is validated before
//! any path is built from it: 64 lowercase hex digits (what Docker and
//! containers/storage generate, and what a chain id's hex is), or such an id
//! followed by `-init` for the init layer between a container and its image
//! (moby `daemon/internal/layer/mounted_layer.go` names it `<id>-init`).
//! Nothing else can reach the filesystem: no `/`, no `..`, no NUL, no
//! upper case that would alias on case-insensitive backing filesystems.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The suffix of an init layer's id.
pub const INIT_SUFFIX: &str = "-init";

/// The only digest algorithm lamina records diff ids and chain ids in.
pub const SHA256_PREFIX: &str = "sha256:";

/// Whether `s` is exactly 64 lowercase hex digits.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `id` is a valid layer id: `[0-9a-f]{64}` or `[0-9a-f]{64}-init`.
pub fn is_valid_id(id: &str) -> bool {
    is_hex64(id.strip_suffix(INIT_SUFFIX).unwrap_or(id))
}

/// Check a layer id; see the module docs for the rule.
pub fn validate_id(id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid layer id {id:?}: expected 64 lowercase hex digits, optionally followed by {INIT_SUFFIX:?}"
        )))
    }
}

/// A layer id that has been checked ([`validate_id`]): the one kind of id
/// a path is ever built from (`layers/<id>`, `mounts/<id>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId(String);

impl LayerId {
    /// Check `id` (see [`validate_id`]).
    pub fn new(id: &str) -> Result<LayerId> {
        validate_id(id)?;
        Ok(LayerId(id.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it names an init layer (`<id>-init`).
    pub fn is_init(&self) -> bool {
        self.0.ends_with(INIT_SUFFIX)
    }
}

impl std::ops::Deref for LayerId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<std::path::Path> for LayerId {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

/// Whether `id` names an init layer.
pub fn is_init_id(id: &str) -> bool {
    id.ends_with(INIT_SUFFIX) && is_valid_id(id)
}

/// The id of the init layer that sits under the container layer `id`.
pub fn init_id(id: &str) -> Result<String> {
    if !is_hex64(id) {
        return Err(Error::InvalidArgument(format!(
            "an init layer belongs to a layer with a 64-hex id, not {id:?}"
        )));
    }
    Ok(format!("{id}{INIT_SUFFIX}"))
}

/// A fresh random layer id (for writable layers, which have no chain id).
///
/// As moby's `stringid.GenerateRandomID`, an id whose 12-character short
/// form is all digits is drawn again, so a short id never reads as a
/// number.
pub fn random_id() -> Result<String> {
    use std::io::Read;
    let path = std::path::Path::new("/dev/urandom");
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    loop {
        let mut bytes = [0u8; 32];
        f.read_exact(&mut bytes)
            .map_err(|e| Error::io("read", path, e))?;
        let id = hex(&bytes);
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return Ok(id);
        }
    }
}

/// Check a `sha256:<64 hex>` digest (a diff id or chain id).
pub fn validate_digest(digest: &str) -> Result<()> {
    match digest.strip_prefix(SHA256_PREFIX) {
        Some(hex) if is_hex64(hex) => Ok(()),
        _ => Err(Error::InvalidArgument(format!(
            "invalid digest {digest:?}: expected \"sha256:\" and 64 lowercase hex digits"
        ))),
    }
}

/// The hex part of a valid `sha256:` digest.
pub fn digest_hex(digest: &str) -> Result<&str> {
    validate_digest(digest)?;
    Ok(&digest[SHA256_PREFIX.len()..])
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex(&Sha256::digest(data)))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// The OCI ChainID of a layer with diff id `diff_id` on a parent whose chain
/// id is `parent_chain_id`.
///
/// image-spec `config.md` and `identity.ChainID`: a base layer's chain id is
/// its diff id; otherwise `sha256(parent_chain_id + " " + diff_id)`, over the
/// digest strings with their `sha256:` prefixes.
pub fn chain_id(parent_chain_id: Option<&str>, diff_id: &str) -> Result<String> {
    validate_digest(diff_id)?;
    match parent_chain_id {
        None => Ok(diff_id.to_owned()),
        Some(parent) => {
            validate_digest(parent)?;
            Ok(sha256_digest(format!("{parent} {diff_id}").as_bytes()))
        }
    }
}

/// The chain ids of a stack of diff ids, base first (`identity.ChainIDs`).
pub fn chain_ids<S: AsRef<str>>(diff_ids: &[S]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = chain_id(out.last().map(String::as_str), d.as_ref())?;
        out.push(next);
    }
    Ok(out)
}

/// The one id among `ids` that `reference` names: the id itself, or else the
/// only id that starts with it.
///
/// An exact match wins over longer ids it prefixes, and a prefix of both
/// `<id>` and `<id>-init` names `<id>`. An empty reference, or one with characters no id has, is
/// not found rather than matching everything. Several matches are an
/// [`Error::AmbiguousLayer`] that lists them, as Docker's truncindex
/// refuses an ambiguous prefix. `root` (the store's) goes into the errors.
pub fn resolve_prefix<'a, I>(ids: I, reference: &str, root: &Path) -> Result<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let not_found = || Error::LayerNotFound {
        reference: reference.to_owned(),
        root: root.to_owned(),
    };
    let plausible = !reference.is_empty()
        && reference.len() <= 64 + INIT_SUFFIX.len()
        && reference
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b"-int".contains(&b));
    if !plausible {
        return Err(not_found());
    }
    let mut matches: Vec<&str> = Vec::new();
    for id in ids {
        if id == reference {
            return Ok(id.to_owned());
        }
        // An init layer is reached only past its hex part: the hex alone
        // (a container's id, or a prefix of it) never names it, even while
        // a delete has taken the container and not yet its init layer.
        if id.starts_with(reference) && (reference.len() > 64 || !is_init_id(id)) {
            matches.push(id);
        }
    }
    // `<id>` and `<id>-init` share every prefix of `<id>`; such a prefix
    // means the layer the user made, not the init layer under it, which a
    // prefix reaches only by going past the hex part.
    if let [x, y] = matches[..] {
        let (short, long) = if x.len() < y.len() { (x, y) } else { (y, x) };
        if long.strip_suffix(INIT_SUFFIX) == Some(short) {
            return Ok(short.to_owned());
        }
    }
    match matches.len() {
        0 => Err(not_found()),
        1 => Ok(matches[0].to_owned()),
        _ => {
            matches.sort_unstable();
            Err(Error::AmbiguousLayer {
                reference: reference.to_owned(),
                root: root.to_owned(),
                candidates: matches.into_iter().map(str::to_owned).collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";

    #[test]
    fn validates_ids() {
        assert!(is_valid_id(A));
        assert!(is_valid_id(&format!("{A}-init")));
        assert!(is_init_id(&format!("{A}-init")));
        assert!(!is_init_id(A));
        for bad in [
            "",
            "-init",
            &A[..63],
            &format!("{A}0"),
            &A.to_uppercase(),
            &format!("../{}", &A[3..]),
            &format!("{}/", &A[..63]),
            &format!("{A}-init-init"),
            &format!("{A}-INIT"),
            &format!("{}\0", &A[..63]),
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(init_id(A).unwrap(), format!("{A}-init"));
        assert!(init_id(&format!("{A}-init")).is_err());
    }

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert!(is_hex64(&a) && is_hex64(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn chain_ids_match_image_spec() {
        // Computed independently: printf 'sha256:<a> sha256:<b>' | sha256sum.
        let a = format!("sha256:{A}");
        let b = format!("sha256:{}", "0".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256_digest(format!("{a} {b}").as_bytes()));
        assert_eq!(chain_id(Some(&a), &b).unwrap(), ids[1]);
        assert!(chain_id(None, A).is_err());
        assert!(chain_id(Some("sha512:00"), &a).is_err());
        // The empty-string digest, a known constant.
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn resolves_prefixes() {
        let b = format!("a3{}", "1".repeat(62));
        let init = format!("{A}-init");
        let ids = [A, b.as_str(), init.as_str()];
        let root = Path::new("/store");
        let find = |r: &str| resolve_prefix(ids, r, root);
        assert_eq!(find(A).unwrap(), A);
        assert_eq!(find("a3e").unwrap(), A);
        assert_eq!(find("a31").unwrap(), b);
        assert_eq!(find(&init).unwrap(), init);
        assert_eq!(find(&format!("{A}-i")).unwrap(), init);
        // The container gone, its init layer not yet: its id is no prefix.
        let alone = [init.as_str()];
        for r in [A, "a3e"] {
            assert!(matches!(
                resolve_prefix(alone, r, root),
                Err(Error::LayerNotFound { .. })
            ));
        }
        match find("a3") {
            Err(e @ Error::AmbiguousLayer { .. }) => {
                let m = e.to_string();
                assert!(m.contains("ambiguous in /store") && m.contains(&b), "{m}");
            }
            other => panic!("{other:?}"),
        }
        for missing in ["", "b", "../", "A3"] {
            match find(missing) {
                Err(e @ Error::LayerNotFound { .. }) => {
                    assert_eq!(e.to_string(), format!("no layer '{missing}' in /store"))
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
