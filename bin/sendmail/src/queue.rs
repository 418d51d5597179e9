//! `mailq` / `sendmail -bp` and `sendmail -q`: both are the control command's business.
//! sendmail replaces itself with `command_directory/petrel -c DIR queue list` or
//! `... queue flush` (`PETREL_CLI` names another program, for tests).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use petrel_config::Config;

use crate::{exit, Fatal};

/// The control command: `PETREL_CLI`, else `command_directory/petrel`.
pub fn cli_program(cfg: &Config) -> PathBuf {
    match std::env::var_os("PETREL_CLI") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(&cfg.get("command_directory")).join("petrel"),
    }
}

/// The arguments for `petrel` to run `queue ACTION` against `config_dir`.
pub fn cli_args(config_dir: &Path, action: &str) -> Vec<std::ffi::OsString> {
    vec![
        "-c".into(),
        config_dir.into(),
        "queue".into(),
        action.into(),
    ]
}

/// Replaces this process with `petrel -c DIR queue ACTION`; returns only on failure.
pub fn exec(cfg: &Config, config_dir: &Path, action: &str) -> Fatal {
    let program = cli_program(cfg);
    let e = Command::new(&program)
        .args(cli_args(config_dir, action))
        .exec();
    Fatal::new(exit::OSERR, format!("execute {}: {e}", program.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn arguments() {
        let a = super::cli_args(std::path::Path::new("/etc/x"), "list");
        assert_eq!(a, ["-c", "/etc/x", "queue", "list"]);
    }
}
