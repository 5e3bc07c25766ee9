//! One registry, spoken to over the distribution API's HTTP: scheme
//! choice, TLS roots, authentication (anonymous, basic, and the bearer
//! token flow of the distribution spec) and bounded retries.
//!
//! `ureq` 3 (blocking, rustls) carries the HTTP: a blob's body reader is a
//! plain `Read` that feeds the applier directly, so no async runtime lives
//! in the extension and no HTTP is written by hand. The token exchange is
//! the spec's small dance: a 401 names a `realm`, `service` and `scope`,
//! a GET of the realm (with basic credentials when there are any) gives a
//! token, cached per scope.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use ureq::http::Response;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::credentials::Credentials;
use super::reference::DOCKER_IO;
use crate::error::{Error, Result};

/// Attempts of one request answered 429 or 5xx, or cut off before an answer.
pub const ATTEMPTS: u32 = 6;
/// The first wait between attempts; doubled each time, at most `WAIT_MAX`.
const WAIT_FIRST: Duration = Duration::from_millis(200);
const WAIT_MAX: Duration = Duration::from_secs(10);

/// Where `docker.io` is served from: its API host is not written into
/// lamina; `LAMINA_DOCKER_IO_ENDPOINT` names it (or a mirror).
pub fn endpoint_of(host: &str) -> Result<String> {
    if host != DOCKER_IO {
        return Ok(host.to_owned());
    }
    std::env::var("LAMINA_DOCKER_IO_ENDPOINT").map_err(|_| {
        Error::Registry(format!(
            "{DOCKER_IO}: set LAMINA_DOCKER_IO_ENDPOINT to the host[:port] of its registry \
             API (or of a mirror) to pull from it"
        ))
    })
}

/// Whether plain HTTP may be tried for `host`: loopback, or named insecure
/// by the caller or in `LAMINA_INSECURE_REGISTRIES`.
fn http_allowed(host: &str, insecure: bool) -> bool {
    if insecure {
        return true;
    }
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback
        || std::env::var("LAMINA_INSECURE_REGISTRIES")
            .is_ok_and(|v| v.split(',').map(str::trim).any(|h| h == host || h == name))
}

/// Docker's per-registry CAs: `<certs.d>/<host:port>/*.crt`.
fn registry_cas(host: &str) -> Result<Vec<Certificate<'static>>> {
    let root = std::env::var_os("LAMINA_CERTS_D")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/docker/certs.d"));
    let dir = root.join(host);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "crt") {
            let pem = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
            for item in ureq::tls::parse_pem(&pem) {
                if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                    out.push(c);
                }
            }
        }
    }
    Ok(out)
}

/// A client of one registry host.
pub struct Client {
    agent: Agent,
    /// `host[:port]` as in references.
    pub host: String,
    /// `https://endpoint` or `http://endpoint`.
    base: String,
    creds: Option<Credentials>,
    tokens: Mutex<HashMap<String, String>>,
}

/// The parameters of a `WWW-Authenticate` challenge.
fn challenge(h: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_owned(), &q[end + 1..]),
                None => (q.to_owned(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_owned(), &after[end..]),
                None => (after.trim().to_owned(), ""),
            }
        };
        params.insert(k, v);
        s = next.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    (scheme.to_ascii_lowercase(), params)
}

fn retry_after(resp: &Response<Body>) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(30)))
}

impl Client {
    /// A client of `host` (a reference's host), its scheme found by asking
    /// `/v2/`: HTTPS, verified; plain HTTP only where [`http_allowed`] and
    /// the server does not speak TLS at all.
    pub fn connect(host: &str, creds: Option<Credentials>, insecure: bool) -> Result<Client> {
        let endpoint = endpoint_of(host)?;
        let cas = registry_cas(&endpoint)?;
        let roots = if cas.is_empty() {
            RootCerts::PlatformVerifier
        } else {
            RootCerts::Specific(Arc::new(cas))
        };
        let tls = TlsConfig::builder()
            .root_certs(roots)
            .disable_verification(insecure)
            .build();
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .user_agent(concat!("lamina/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .into();
        let creds = creds.or_else(|| super::credentials::from_docker_config(host).ok().flatten());
        let mut c = Client {
            agent,
            host: host.to_owned(),
            base: format!("https://{endpoint}"),
            creds,
            tokens: Mutex::new(HashMap::new()),
        };
        match c.agent.get(format!("{}/v2/", c.base)).call() {
            Ok(_) => Ok(c),
            Err(e) if http_allowed(&endpoint, insecure) && !is_cert_error(&e) => {
                c.base = format!("http://{endpoint}");
                c.agent
                    .get(format!("{}/v2/", c.base))
                    .call()
                    .map_err(|e| c.transport(&format!("{}/v2/", c.base), e))?;
                Ok(c)
            }
            Err(e) => Err(c.transport(&format!("{}/v2/", c.base), e)),
        }
    }

    fn transport(&self, url: &str, e: ureq::Error) -> Error {
        Error::Registry(format!("{}: {url}: {e}", self.host))
    }

    /// A GET (`method` "GET" or "HEAD") of `path` (after `/v2/`) with the
    /// token for `scope`, answered with anything but 401/429/5xx; those are
    /// authenticated or retried.
    pub fn get(
        &self,
        method: &str,
        path: &str,
        accept: &str,
        scope: &str,
    ) -> Result<Response<Body>> {
        let headers: Vec<(&str, String)> = if accept.is_empty() {
            Vec::new()
        } else {
            vec![("Accept", accept.to_owned())]
        };
        self.send(method, &self.url(path), &headers, None, scope)
    }

    /// The URL of `path` after `/v2/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.base)
    }

    /// The URL an upload's `Location` header names (absolute, or relative
    /// to the registry).
    pub fn location(&self, resp: &Response<Body>) -> Result<String> {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Registry(format!("{}: an answer without Location", self.host)))?;
        Ok(
            if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_owned()
            } else if loc.starts_with('/') {
                format!("{}{loc}", self.base)
            } else {
                format!("{}/{loc}", self.base)
            },
        )
    }

    /// A request of `url` (GET, HEAD, DELETE, or POST/PUT/PATCH with
    /// `body`, empty where `None`), authenticated and retried as [`get`]
    /// says.
    ///
    /// [`get`]: Client::get
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
        scope: &str,
    ) -> Result<Response<Body>> {
        let mut wait = WAIT_FIRST;
        let mut authed_once = false;
        for attempt in 1..=ATTEMPTS {
            let auth = self.auth_header(scope);
            let mut all: Vec<(&str, String)> = headers.to_vec();
            if let Some(a) = auth {
                all.push(("Authorization", a));
            }
            let result = match method {
                "GET" | "HEAD" | "DELETE" => {
                    let mut req = match method {
                        "HEAD" => self.agent.head(url),
                        "DELETE" => self.agent.delete(url),
                        _ => self.agent.get(url),
                    };
                    for (k, v) in &all {
                        req = req.header(*k, v);
                    }
                    req.call()
                }
                _ => {
                    let mut req = match method {
                        "POST" => self.agent.post(url),
                        "PATCH" => self.agent.patch(url),
                        _ => self.agent.put(url),
                    };
                    for (k, v) in &all {
                        req = req.header(*k, v);
                    }
                    req.send(body.unwrap_or(&[]))
                }
            };
            let resp = match result {
                Ok(r) => r,
                Err(e) if attempt < ATTEMPTS && !is_cert_error(&e) => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(WAIT_MAX);
                    continue;
                }
                Err(e) => return Err(self.transport(url, e)),
            };
            let status = resp.status().as_u16();
            if status == 401 && !authed_once {
                authed_once = true;
                let h = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                self.authenticate(&h, scope)?;
                continue;
            }
            if status == 401 || status == 403 {
                return Err(self.denied(url, status));
            }
            if (status == 429 || status >= 500) && attempt < ATTEMPTS {
                std::thread::sleep(retry_after(&resp).unwrap_or(wait));
                wait = (wait * 2).min(WAIT_MAX);
                continue;
            }
            return Ok(resp);
        }
        Err(Error::Registry(format!(
            "{}: {url}: still failing after {ATTEMPTS} attempts",
            self.host
        )))
    }

    /// A `method` of `url` whose body streams from `body`: sent once (a
    /// stream cannot be replayed), with the token an earlier request of
    /// `scope` obtained.
    pub fn send_stream(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &mut dyn Read,
        scope: &str,
    ) -> Result<Response<Body>> {
        let mut req = match method {
            "PUT" => self.agent.put(url),
            "POST" => self.agent.post(url),
            _ => self.agent.patch(url),
        };
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(a) = self.auth_header(scope) {
            req = req.header("Authorization", a);
        }
        let resp = req
            .send(ureq::SendBody::from_reader(body))
            .map_err(|e| self.transport(url, e))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(self.denied(url, status));
        }
        Ok(resp)
    }

    fn denied(&self, url: &str, status: u16) -> Error {
        Error::RegistryAuth(format!(
            "{}: access to {url} denied ({status}){}",
            self.host,
            if self.creds.is_some() {
                ": wrong credentials?"
            } else {
                ": no credentials (auth=, or lamina login)"
            }
        ))
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tokens.get(scope).or_else(|| tokens.get("")) {
            return Some(t.clone());
        }
        None
    }

    fn authenticate(&self, header: &str, scope: &str) -> Result<()> {
        let (scheme, params) = challenge(header);
        let value = match scheme.as_str() {
            "basic" => {
                let Some(c) = &self.creds else {
                    return Err(Error::RegistryAuth(format!(
                        "{}: the registry asks for credentials (auth=, or lamina login)",
                        self.host
                    )));
                };
                (String::new(), format!("Basic {}", c.basic()))
            }
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| {
                    Error::Registry(format!("{}: a Bearer challenge without a realm", self.host))
                })?;
                let mut url = format!("{realm}?");
                if let Some(s) = params.get("service") {
                    url.push_str(&format!("service={}&", urlencode(s)));
                }
                let want = if scope.is_empty() {
                    params.get("scope").cloned().unwrap_or_default()
                } else {
                    scope.to_owned()
                };
                // Several scopes (a push that mounts from another
                // repository) go as several `scope` parameters.
                for one in want.split(' ').filter(|s| !s.is_empty()) {
                    url.push_str(&format!("scope={}&", urlencode(one)));
                }
                let mut req = self.agent.get(&url);
                if let Some(c) = &self.creds {
                    req = req.header("Authorization", format!("Basic {}", c.basic()));
                }
                let mut resp = req.call().map_err(|e| self.transport(&url, e))?;
                let status = resp.status().as_u16();
                if status == 401 || status == 403 {
                    return Err(Error::RegistryAuth(format!(
                        "{}: the token service refused the credentials ({status})",
                        self.host
                    )));
                }
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_vec()
                    .map_err(|e| self.transport(&url, e))?;
                let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                    Error::Registry(format!("{}: the token answer is not JSON: {e}", self.host))
                })?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| {
                        Error::Registry(format!("{}: the token answer has no token", self.host))
                    })?;
                (scope.to_owned(), format!("Bearer {token}"))
            }
            other => {
                return Err(Error::Registry(format!(
                    "{}: unsupported authentication scheme {other:?}",
                    self.host
                )))
            }
        };
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(value.0, value.1);
        Ok(())
    }

    /// The body of a small document (a manifest or a config), at most `max`
    /// bytes.
    pub fn read_small(&self, resp: Response<Body>, max: u64, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        resp.into_body()
            .into_reader()
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::Registry(format!("{}: {what}: {e}", self.host)))?;
        if out.len() as u64 > max {
            return Err(Error::Registry(format!(
                "{}: {what} is larger than {max} bytes",
                self.host
            )));
        }
        Ok(out)
    }
}

/// Check `creds` against `host` as `docker login` does: `/v2/` answered
/// with them (through the token service where the registry has one).
pub fn login(host: &str, creds: Credentials, insecure: bool) -> Result<()> {
    let c = Client::connect(host, Some(creds), insecure)?;
    let resp = c.get("GET", "", "", "")?;
    match resp.status().as_u16() {
        200 => Ok(()),
        s => Err(Error::Registry(format!("{host}: GET /v2/: HTTP {s}"))),
    }
}

fn is_cert_error(e: &ureq::Error) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("certificate") || s.contains("unknownissuer") || s.contains("invalid peer")
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// base64 of `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let (s, p) = challenge(
            r#"Bearer realm="https://auth.test/token",service="registry.test",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.test/token");
        assert_eq!(p["service"], "registry.test");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            (s.as_str(), p["realm"].as_str()),
            ("basic", "Registry Realm")
        );
    }

    #[test]
    fn http_only_for_loopback_or_named() {
        assert!(http_allowed("127.0.0.1:5000", false));
        assert!(http_allowed("localhost:5000", false));
        assert!(http_allowed("[::1]:5000", false));
        assert!(!http_allowed("registry.test:5000", false));
        assert!(http_allowed("registry.test:5000", true));
    }
}
