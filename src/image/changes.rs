//! The config changes of `docker commit --change`: Dockerfile instructions
//! that touch only the image config (`ENV`, `CMD`, `ENTRYPOINT`, `LABEL`,
//! `WORKDIR`, `USER`, `EXPOSE`, `VOLUME`, `STOPSIGNAL`), read as Docker's
//! builder reads them (moby `builder/dockerfile` dispatchers), or a JSON
//! object of config keys set as given. Variables (`$HOME`) are not
//! expanded: a commit has no build context to expand them from, and the
//! value is kept as written.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// One change to an image's runtime config (`config` in the image JSON).
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigChange {
    /// A Dockerfile instruction, e.g. `ENV PATH=/usr/bin` or `CMD ["sh"]`.
    Instruction(String),
    /// Config keys (`Env`, `Cmd`, `Labels`, ...) replaced by these values.
    Set(Map<String, Value>),
}

/// Apply `changes` in order to the runtime config `cfg`.
pub fn apply_changes(cfg: &mut Map<String, Value>, changes: &[ConfigChange]) -> Result<()> {
    let mut cmd_set = false;
    for c in changes {
        match c {
            ConfigChange::Set(m) => {
                for (k, v) in m {
                    cfg.insert(k.clone(), v.clone());
                }
            }
            ConfigChange::Instruction(line) => apply_one(cfg, line, &mut cmd_set)?,
        }
    }
    Ok(())
}

fn bad(line: &str, why: &str) -> Error {
    Error::InvalidArgument(format!("change {line:?}: {why}"))
}

fn apply_one(cfg: &mut Map<String, Value>, line: &str, cmd_set: &mut bool) -> Result<()> {
    let trimmed = line.trim();
    let (word, rest) = trimmed
        .split_once(|c: char| c.is_whitespace())
        .map_or((trimmed, ""), |(w, r)| (w, r.trim()));
    let word = word.to_ascii_uppercase();
    if rest.is_empty() {
        return Err(bad(line, &format!("{word} needs an argument")));
    }
    match word.as_str() {
        "ENV" => {
            let mut env = string_list(cfg.get("Env"));
            for (k, v) in pairs(line, rest, true)? {
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                env.push(format!("{k}={v}"));
            }
            cfg.insert("Env".into(), json!(env));
        }
        "LABEL" => {
            let labels = object(cfg, "Labels");
            for (k, v) in pairs(line, rest, true)? {
                labels.insert(k, Value::String(v));
            }
        }
        "CMD" => {
            cfg.insert("Cmd".into(), json!(command(rest)));
            *cmd_set = true;
        }
        "ENTRYPOINT" => {
            cfg.insert("Entrypoint".into(), json!(command(rest)));
            // Docker: an ENTRYPOINT resets a CMD it did not set itself.
            if !*cmd_set {
                cfg.insert("Cmd".into(), Value::Null);
            }
        }
        "WORKDIR" => {
            let prev = cfg.get("WorkingDir").and_then(Value::as_str).unwrap_or("");
            let joined = if rest.starts_with('/') {
                rest.to_owned()
            } else {
                format!("{}/{rest}", if prev.is_empty() { "/" } else { prev })
            };
            cfg.insert("WorkingDir".into(), Value::String(clean_path(&joined)));
        }
        "USER" => {
            cfg.insert("User".into(), Value::String(rest.to_owned()));
        }
        "STOPSIGNAL" => {
            cfg.insert("StopSignal".into(), Value::String(rest.to_owned()));
        }
        "EXPOSE" => {
            let ports = object(cfg, "ExposedPorts");
            for p in rest.split_whitespace() {
                for port in expand_port(line, p)? {
                    ports.insert(port, json!({}));
                }
            }
        }
        "VOLUME" => {
            let list = match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => v,
                Err(_) => rest.split_whitespace().map(str::to_owned).collect(),
            };
            let vols = object(cfg, "Volumes");
            for v in list {
                if v.is_empty() {
                    return Err(bad(line, "a volume path is empty"));
                }
                vols.insert(v, json!({}));
            }
        }
        other => {
            return Err(bad(
                line,
                &format!(
                    "{other} cannot be a commit change (ENV, CMD, ENTRYPOINT, LABEL, WORKDIR, \
                     USER, EXPOSE, VOLUME and STOPSIGNAL can)"
                ),
            ))
        }
    }
    Ok(())
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `cfg[key]` as an object, made empty when missing or null.
fn object<'a>(cfg: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = cfg.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("made an object above")
}

/// Exec form (a JSON array of strings) as it is; shell form through
/// `/bin/sh -c`.
fn command(rest: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(rest) {
        Ok(v) => v,
        Err(_) => vec!["/bin/sh".into(), "-c".into(), rest.to_owned()],
    }
}

/// `k=v k2="v 2"` pairs, or the legacy `k v w` form (one key, the rest
/// its value) when the first word has no `=`.
fn pairs(line: &str, rest: &str, legacy: bool) -> Result<Vec<(String, String)>> {
    let words = words(line, rest)?;
    let first_has_eq = words.first().is_some_and(|w| w.contains('='));
    if !first_has_eq && legacy {
        let (k, v) = rest
            .split_once(|c: char| c.is_whitespace())
            .ok_or_else(|| bad(line, "needs a value: KEY=VALUE or KEY VALUE"))?;
        return Ok(vec![(k.to_owned(), v.trim_start().to_owned())]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(bad(line, &format!("{w:?} is not KEY=VALUE"))),
        })
        .collect()
}

/// Split on unquoted whitespace, removing quotes and backslash escapes
/// (inside single quotes nothing is special), as the builder's word
/// splitter does.
fn words(line: &str, s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(n) => cur.push(n),
                        None => return Err(bad(line, "unterminated single quote")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(n) => cur.push(n),
                            None => return Err(bad(line, "unterminated double quote")),
                        },
                        Some(n) => cur.push(n),
                        None => return Err(bad(line, "unterminated double quote")),
                    }
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `80` is `80/tcp`; `8000-8002/udp` is three ports.
fn expand_port(line: &str, p: &str) -> Result<Vec<String>> {
    let (ports, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad(line, &format!("{p:?}: protocol is tcp, udp or sctp")));
    }
    let num = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| bad(line, &format!("{p:?} is not a port")))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(ports)?, num(ports)?),
    };
    if lo > hi {
        return Err(bad(line, &format!("{p:?}: the range is backwards")));
    }
    Ok((lo..=hi).map(|n| format!("{n}/{proto}")).collect())
}

/// `filepath.Clean` for absolute paths: no `.`, `..` or doubled slashes.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(base: Value, changes: &[&str]) -> Value {
        let mut cfg = base.as_object().unwrap().clone();
        let ch: Vec<_> = changes
            .iter()
            .map(|s| ConfigChange::Instruction((*s).into()))
            .collect();
        apply_changes(&mut cfg, &ch).unwrap();
        Value::Object(cfg)
    }

    #[test]
    fn instructions_as_the_builder_reads_them() {
        let out = run(
            json!({"Env": ["PATH=/bin", "A=1"], "Cmd": ["bash"], "WorkingDir": "/srv"}),
            &[
                "ENV A=2 B=\"two words\" C=it\\'s",
                "env LEGACY some value",
                "LABEL org.x=1 'y z'=\"q\"",
                "ENTRYPOINT [\"/app\"]",
                "WORKDIR ../opt/./app",
                "USER 1000:1000",
                "EXPOSE 80 53/udp 8000-8001",
                "VOLUME [\"/data\", \"/logs\"]",
                "VOLUME /cache",
                "STOPSIGNAL SIGTERM",
            ],
        );
        assert_eq!(
            out["Env"],
            json!([
                "PATH=/bin",
                "A=2",
                "B=two words",
                "C=it's",
                "LEGACY=some value"
            ])
        );
        assert_eq!(out["Labels"], json!({"org.x": "1", "y z": "q"}));
        assert_eq!(out["Entrypoint"], json!(["/app"]));
        assert_eq!(
            out["Cmd"],
            Value::Null,
            "ENTRYPOINT resets an inherited CMD"
        );
        assert_eq!(out["WorkingDir"], json!("/opt/app"));
        assert_eq!(out["User"], json!("1000:1000"));
        assert_eq!(
            out["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}})
        );
        assert_eq!(
            out["Volumes"],
            json!({"/data": {}, "/logs": {}, "/cache": {}})
        );
        assert_eq!(out["StopSignal"], json!("SIGTERM"));

        let out = run(json!({}), &["CMD echo hi", "ENTRYPOINT [\"tini\", \"--\"]"]);
        assert_eq!(
            out["Cmd"],
            json!(["/bin/sh", "-c", "echo hi"]),
            "CMD set here is kept"
        );
    }

    #[test]
    fn refused_with_the_change_named() {
        for bad in [
            "RUN rm -rf /",
            "ENV",
            "EXPOSE 99999",
            "EXPOSE 80/xyz",
            "ENV A=\"open",
            "LABEL =v",
        ] {
            let mut cfg = Map::new();
            let e = apply_changes(&mut cfg, &[ConfigChange::Instruction(bad.into())]).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
