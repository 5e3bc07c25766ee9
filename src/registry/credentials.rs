//! Credentials for a registry: given by the caller, or read from Docker's
//! config file as Docker reads it (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`): `credHelpers[host]`, else `credsStore`, through
//! the `docker-credential-<name> get` protocol (the host on stdin, a JSON
//! `{"Username", "Secret"}` on stdout), else `auths[host].auth` (base64
//! `user:password`). The protocol is a process and two JSON fields, so it is
//! written here rather than taken from a crate that reads the same file with
//! its own rules.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::Value;

use crate::error::{Error, Result};

/// A user name and a password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (`<token>` where the secret is an identity token).
    pub user: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <password>)", self.user)
    }
}

impl Credentials {
    /// `Basic` authorization value (without the scheme).
    pub fn basic(&self) -> String {
        super::client::basic(&self.user, &self.password)
    }
}

/// Docker's config file.
pub fn config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => Some(PathBuf::from(d).join("config.json")),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
    }
}

/// The credentials Docker's config gives `host`, if any.
pub fn from_docker_config(host: &str) -> Result<Option<Credentials>> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let cfg: Value = serde_json::from_slice(&data)
        .map_err(|e| Error::Registry(format!("{}: not valid JSON: {e}", path.display())))?;
    let helper = cfg
        .get("credHelpers")
        .and_then(|h| h.get(host))
        .or_else(|| cfg.get("credsStore"))
        .and_then(Value::as_str);
    if let Some(name) = helper {
        return helper_get(name, host);
    }
    let entry = cfg.get("auths").and_then(|a| {
        a.get(host)
            .or_else(|| a.get(format!("https://{host}").as_str()))
            .or_else(|| a.get(format!("http://{host}").as_str()))
    });
    let Some(auth) = entry.and_then(|e| e.get("auth")).and_then(Value::as_str) else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| {
            Error::Registry(format!(
                "{}: auths.{host}.auth is not base64",
                path.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&raw);
    let (user, password) = text.split_once(':').ok_or_else(|| {
        Error::Registry(format!(
            "{}: auths.{host}.auth is not user:password",
            path.display()
        ))
    })?;
    Ok(Some(Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    }))
}

/// `docker-credential-<name> get` for `host`.
fn helper_get(name: &str, host: &str) -> Result<Option<Credentials>> {
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Registry(format!("{host}: cannot run {prog}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Registry(format!("{host}: {prog}: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout);
        // The protocol's answer for a host it has nothing for.
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(Error::Registry(format!(
            "{host}: {prog} get failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Registry(format!("{host}: {prog} get: not JSON: {e}")))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    Ok(Some(Credentials {
        user: field("Username"),
        password: field("Secret"),
    }))
}
