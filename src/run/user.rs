//! Who the command runs as and with what environment: `docker run -u`'s
//! lookup in the container's own `/etc/passwd` and `/etc/group`, and the
//! variables Docker adds (moby `oci.DefaultSpec`, `daemon/exec` /
//! `container.CreateDaemonEnvironment`).

use crate::error::{Error, Result};

/// Docker's default `PATH` for Linux containers.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The ids and home a `user` spec resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Supplementary gids (from `/etc/group` membership of the user's name).
    pub groups: Vec<u32>,
    /// `$HOME`: the passwd entry's, else `/`.
    pub home: String,
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = Passwd<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(Passwd {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolve `spec` (`None` is root) as runc/moby's `user.GetExecUser` does:
/// a name must be in `passwd`; a number need not be (then the gid is the
/// number's own passwd entry's, else 0, and the home `/`). A group part
/// replaces the primary gid and drops the supplementary groups.
pub fn resolve(spec: Option<&str>, passwd: &str, group: &str) -> Result<Identity> {
    let spec = spec.unwrap_or("0");
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let bad = |what: String| Error::InvalidArgument(format!("user {spec:?}: {what}"));
    let entry = match u.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|p| p.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|p| p.name == u)
                .ok_or_else(|| bad(format!("no user {u:?} in the container's /etc/passwd")))?,
        ),
    };
    let uid = match (&entry, u.parse::<u32>()) {
        (_, Ok(n)) => n,
        (Some(p), _) => p.uid,
        (None, _) => unreachable!("names without an entry were refused"),
    };
    let mut gid = entry.as_ref().map_or(0, |p| p.gid);
    let home = entry
        .as_ref()
        .map_or("/", |p| if p.home.is_empty() { "/" } else { p.home })
        .to_owned();
    let name = entry.as_ref().map(|p| p.name);
    let mut groups = Vec::new();
    match g {
        Some(g) => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => group_entries(group)
                    .find(|(n, _, _)| *n == g)
                    .map(|(_, id, _)| id)
                    .ok_or_else(|| bad(format!("no group {g:?} in the container's /etc/group")))?,
            }
        }
        None => {
            if let Some(name) = name {
                for (_, id, members) in group_entries(group) {
                    if members.contains(&name) && !groups.contains(&id) {
                        groups.push(id);
                    }
                }
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

/// `env` with what Docker adds where missing: `PATH`, `HOSTNAME`, `HOME`.
pub fn complete_env(env: &[String], hostname: &str, home: &str) -> Vec<String> {
    let has = |k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
    let mut out = Vec::with_capacity(env.len() + 3);
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOSTNAME") {
        out.push(format!("HOSTNAME={hostname}"));
    }
    out.extend(env.iter().cloned());
    if !has("HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// The `PATH` of an environment (Docker's default where it has none).
pub fn path_of(env: &[String]) -> &str {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:app\nstaff:x:50:app,daemon\napp:x:1000:\n";

    #[test]
    fn names_and_numbers_resolve_as_runc_does() {
        let r = |s| resolve(s, PASSWD, GROUP).unwrap();
        assert_eq!(r(None).uid, 0);
        assert_eq!(r(None).home, "/root");
        let app = r(Some("app"));
        assert_eq!(
            (app.uid, app.gid, app.groups.clone()),
            (1000, 1000, vec![4, 50])
        );
        assert_eq!(app.home, "/home/app");
        let n = r(Some("1000"));
        assert_eq!((n.uid, n.gid, n.groups), (1000, 1000, vec![4, 50]));
        let unknown = r(Some("4242"));
        assert_eq!(
            (unknown.uid, unknown.gid, unknown.home.as_str()),
            (4242, 0, "/")
        );
        let ug = r(Some("daemon:staff"));
        assert_eq!((ug.uid, ug.gid, ug.groups), (1, 50, vec![]));
        assert_eq!(r(Some("7:9")).gid, 9);
        assert!(resolve(Some("ghost"), PASSWD, GROUP).is_err());
        assert!(resolve(Some("app:ghosts"), PASSWD, GROUP).is_err());
    }

    #[test]
    fn docker_adds_path_hostname_and_home_where_missing() {
        let e = complete_env(&["A=1".into()], "h", "/root");
        assert_eq!(
            e,
            [
                "PATH=".to_owned() + DEFAULT_PATH,
                "HOSTNAME=h".into(),
                "A=1".into(),
                "HOME=/root".into()
            ]
        );
        let e = complete_env(&["PATH=/x".into(), "HOME=/y".into()], "h", "/root");
        assert_eq!(path_of(&e), "/x");
        assert_eq!(e.len(), 3);
    }
}
