//! `petrel check`: the configuration, the programs services.conf names, and the spool.
//!
//! A broken configuration file stops the check (`petrel: fatal: FILE, line N: reason`);
//! other problems are each reported as `petrel: error: ...` and make the exit status 1.

use crate::control::spool_ids;
use crate::{Fail, Res};
use petrel_config::{services, Config, Service};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Problems with the programs: `master` and every service's command must be executable
/// files in `daemon_directory`.
pub fn program_problems(cfg: &Config, svcs: &[Service], services_file: &Path) -> Vec<String> {
    let dd = PathBuf::from(cfg.get("daemon_directory"));
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut wanted: Vec<(Option<&Service>, &str)> = vec![(None, "master")];
    wanted.extend(svcs.iter().map(|s| (Some(s), s.command.as_str())));
    for (svc, cmd) in wanted {
        if seen.contains(&cmd) {
            continue;
        }
        seen.push(cmd);
        let p = dd.join(cmd);
        let what = match std::fs::metadata(&p) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => continue,
            Ok(m) if m.is_file() => "is not executable",
            Ok(_) => "is not a file",
            Err(_) => "does not exist",
        };
        out.push(match svc {
            Some(s) => format!(
                "{}, line {}: service {}: {} {what}",
                services_file.display(),
                s.line,
                s.name,
                p.display()
            ),
            None => format!("{} {what}", p.display()),
        });
    }
    out
}

/// Problems with what qmgr and the SMTP client read at start (they would only show as
/// crash-looping services): lookup tables that cannot be read or parsed, an unknown
/// smtp_tls_security_level, a CA file that cannot be loaded.
pub fn routing_problems(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut table = |param: &str| match petrel_maps::table::Tables::open(&cfg.get_list(param)) {
        Ok(t) => {
            for w in t.warnings() {
                eprintln!("petrel: warning: {param}: {w}");
            }
        }
        Err(e) => out.push(format!("{param}: {e}")),
    };
    table("transport_maps");
    if cfg.get_bool("smtp_sasl_auth_enable") {
        table("smtp_sasl_password_maps");
    }
    let level = cfg.get("smtp_tls_security_level").to_ascii_lowercase();
    let level = match level.trim() {
        "" | "none" => None,
        "may" => Some(petrel_tls::ClientLevel::May),
        "encrypt" => Some(petrel_tls::ClientLevel::Encrypt),
        "verify" | "secure" => Some(petrel_tls::ClientLevel::Verify),
        other => {
            out.push(format!(
                "smtp_tls_security_level: unknown level {other:?} (none, may, encrypt or verify)"
            ));
            None
        }
    };
    let ca = cfg.get("smtp_tls_CAfile");
    if let (Some(l), false) = (level, ca.trim().is_empty()) {
        if let Err(e) = petrel_tls::ClientConfig::new(l, Some(Path::new(ca.trim()))) {
            out.push(format!("smtp_tls_CAfile: {e}"));
        }
    }
    out
}

/// Problems with the TLS certificate and key of every smtpd service that uses TLS
/// (petrel.conf, with each service's `-o` overrides applied): missing, unreadable, not PEM,
/// or a key that does not match its certificate.
pub fn tls_problems(cfg: &Config, svcs: &[Service], services_file: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for s in svcs.iter().filter(|s| s.command == "smtpd") {
        let mut c = cfg.clone();
        for o in s.overrides() {
            let _ = c.apply_override_arg(o);
        }
        let level = c.get("smtpd_tls_security_level");
        let wrapper = c.get_bool("smtpd_tls_wrappermode");
        if !wrapper && (level.is_empty() || level == "none") {
            continue;
        }
        let where_ = format!(
            "{}, line {}: service {}",
            services_file.display(),
            s.line,
            s.name
        );
        let cert = c.get("smtpd_tls_cert_file");
        if cert.is_empty() {
            out.push(format!(
                "{where_}: TLS is on but smtpd_tls_cert_file is empty"
            ));
            continue;
        }
        let key = c.get("smtpd_tls_key_file");
        if let Err(e) = petrel_tls::ServerConfig::load(Path::new(&cert), Path::new(&key)) {
            out.push(format!("{where_}: {e}"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What is wrong with postdrop, `(mode, uid, gid)` as found, when users must be able to
/// submit through it: it must be root's, set-group-id `setgid_group` (gid `drop_gid`), and
/// writable by root only.
pub fn postdrop_problem(path: &Path, found: (u32, u32, u32), drop_gid: u32) -> Option<String> {
    let (mode, uid, gid) = found;
    let ok = uid == 0 && gid == drop_gid && mode & 0o2000 != 0 && mode & 0o4022 == 0;
    (!ok).then(|| {
        format!(
            "{}: mode {:04o}, owner {uid}:{gid}; should be mode 2755, owner 0:{drop_gid} \
             (set-group-id setgid_group), or local users cannot submit mail",
            path.display(),
            mode & 0o7777
        )
    })
}

/// `petrel check`.
pub fn run(dir: &Path) -> Res {
    let cfg = crate::load_config(dir)?;
    for w in cfg.warnings() {
        eprintln!("petrel: warning: {w}");
    }
    cfg.validate().map_err(|e| Fail::Fatal(e.to_string()))?;
    let sfile = dir.join(petrel_config::SERVICES_FILE);
    let svcs = services::load(&sfile).map_err(|e| Fail::Fatal(e.to_string()))?;
    let mut problems = program_problems(&cfg, &svcs, &sfile);
    problems.extend(tls_problems(&cfg, &svcs, &sfile));
    problems.extend(routing_problems(&cfg));
    let q = PathBuf::from(cfg.get("queue_directory"));
    let mut modes = Vec::new();
    match spool_ids(&cfg) {
        Ok(ids) => {
            modes.extend(petrel_queue::spool::check(&q, ids));
            let postdrop = PathBuf::from(cfg.get("daemon_directory")).join("postdrop");
            if let (Some(ids), Ok(m)) = (ids, std::fs::metadata(&postdrop)) {
                use std::os::unix::fs::MetadataExt;
                modes.extend(postdrop_problem(
                    &postdrop,
                    (m.mode(), m.uid(), m.gid()),
                    ids.drop_gid,
                ));
            }
        }
        Err(Fail::Fatal(e) | Fail::Msg(e)) => problems.push(e),
        Err(Fail::Silent) => {}
    }
    let fixable = !modes.is_empty();
    problems.extend(modes);
    for p in &problems {
        eprintln!("petrel: error: {p}");
    }
    if fixable {
        eprintln!("petrel: petrel set-permissions sets these owners and modes");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Fail::Silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postdrop_must_be_set_group_id_to_the_drop_group_and_root_s() {
        let p = Path::new("/usr/lib/petrel/postdrop");
        assert_eq!(postdrop_problem(p, (0o102755, 0, 120), 120), None);
        for bad in [
            (0o100755, 0, 0),      // as installed, before set-permissions
            (0o102755, 0, 0),      // set-gid, but to root's group
            (0o102755, 1000, 120), // not root's
            (0o102775, 0, 120),    // group-writable
            (0o106755, 0, 120),    // set-uid too
        ] {
            let e = postdrop_problem(p, bad, 120).expect("a problem");
            assert!(e.starts_with("/usr/lib/petrel/postdrop: mode "), "{e}");
        }
    }

    #[test]
    fn missing_and_unexecutable_programs_are_named_with_their_line() {
        let t = tempfile::tempdir().expect("tempdir");
        let bin = t.path();
        std::fs::write(bin.join("master"), "").expect("write");
        std::fs::set_permissions(bin.join("master"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::write(bin.join("qmgr"), "").expect("write");
        let cfg = Config::parse(
            &format!("daemon_directory = {}\n", bin.display()),
            Path::new("petrel.conf"),
        )
        .expect("parses");
        let svcs = services::parse(
            "qmgr unix n - n 300 1 qmgr\npickup unix n - n 60 1 pickup\n",
            Path::new("services.conf"),
        )
        .expect("parses");
        let p = program_problems(&cfg, &svcs, Path::new("services.conf"));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("services.conf, line 1: service qmgr: ")
                && p[0].ends_with("is not executable")
        );
        assert!(p[1].contains("line 2: service pickup") && p[1].ends_with("does not exist"));
    }
}
