//! Postfix-style logging: one line per event, the queue id first, to syslog (LOG_MAIL by
//! default) or to `maillog_file`.
//!
//! ```text
//! Nov 23 01:06:00 host petrel/local[4242]: 1PJ74S4LR057GBN: to=<a@b>, relay=local, ...
//! ```
//!
//! Programs log through the `log` crate's macros: `info!` for events, `warn!` (printed as
//! `warning: ...`, we carried on), `error!` (`error: ...`). [`fatal`] logs `fatal: ...` and
//! exits: the environment is broken. The sink is opened once, before any chroot or
//! privilege drop, and kept open.
#![deny(missing_docs)]

use petrel_config::Config;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

enum Sink {
    File(File),
    Syslog(syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>),
    Stderr,
}

struct Logger {
    program: String,
    host: String,
    sink: Mutex<Sink>,
    also_stderr: bool,
}

fn timestamp() -> String {
    let now = petrel_queue::now() as i64;
    // "Mon Nov 23 01:06:00 2026" → "Nov 23 01:06:00"
    let a = petrel_queue::asctime_date(now);
    a.get(4..19).unwrap_or(&a).to_string()
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = match record.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            _ => "",
        };
        let msg = format!("{prefix}{}", record.args());
        self.emit(&msg);
    }

    fn flush(&self) {}
}

impl Logger {
    fn emit(&self, msg: &str) {
        let pid = std::process::id();
        let line = format!(
            "{} {} {}[{pid}]: {msg}\n",
            timestamp(),
            self.host,
            self.program
        );
        if self.also_stderr {
            let _ = io::stderr().write_all(format!("{}: {msg}\n", self.program).as_bytes());
        }
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        match &mut *sink {
            // One write() per line on an O_APPEND file: lines from many processes never mix.
            Sink::File(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            Sink::Syslog(s) => {
                if s.info(msg).is_err() {
                    let _ = io::stderr().write_all(line.as_bytes());
                }
            }
            Sink::Stderr => {
                if !self.also_stderr {
                    let _ = io::stderr().write_all(line.as_bytes());
                }
            }
        }
    }
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

fn facility(name: &str) -> syslog::Facility {
    use syslog::Facility::*;
    match name {
        "user" => LOG_USER,
        "daemon" => LOG_DAEMON,
        "local0" => LOG_LOCAL0,
        "local1" => LOG_LOCAL1,
        "local2" => LOG_LOCAL2,
        "local3" => LOG_LOCAL3,
        "local4" => LOG_LOCAL4,
        "local5" => LOG_LOCAL5,
        "local6" => LOG_LOCAL6,
        "local7" => LOG_LOCAL7,
        _ => LOG_MAIL,
    }
}

/// Sets up logging for `program` (e.g. `qmgr`) from `cfg`: `maillog_file` if set, else
/// syslog, else standard error. With `also_stderr`, every line is also printed to standard
/// error (for commands run by a person). Calling it twice keeps the first set-up.
pub fn init(program: &str, cfg: &Config, also_stderr: bool) {
    let name = format!("{}/{program}", cfg.get("syslog_name"));
    let host = cfg
        .get("myhostname")
        .split('.')
        .next()
        .unwrap_or("localhost")
        .to_string();
    let file = cfg.get("maillog_file");
    let sink = if !file.is_empty() {
        match OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(&file)
        {
            Ok(f) => Sink::File(f),
            Err(e) => {
                eprintln!(
                    "{name}: warning: cannot open maillog_file {file}: {e}; logging to stderr"
                );
                Sink::Stderr
            }
        }
    } else {
        let fmt = syslog::Formatter3164 {
            facility: facility(&cfg.get("syslog_facility")),
            hostname: None,
            process: name.clone(),
            pid: std::process::id(),
        };
        match syslog::unix(fmt) {
            Ok(l) => Sink::Syslog(l),
            Err(_) => Sink::Stderr,
        }
    };
    init_with(name, host, sink, also_stderr);
}

/// Logging to standard error only (before a configuration is loaded, or for tools).
pub fn init_stderr(program: &str) {
    init_with(
        format!("petrel/{program}"),
        "localhost".into(),
        Sink::Stderr,
        false,
    );
}

fn init_with(program: String, host: String, sink: Sink, also_stderr: bool) {
    let logger = Logger {
        program,
        host,
        sink: Mutex::new(sink),
        also_stderr,
    };
    if LOGGER.set(logger).is_ok() {
        if let Some(l) = LOGGER.get() {
            let _ = log::set_logger(l);
            log::set_max_level(log::LevelFilter::Info);
        }
    }
}

/// Logs `fatal: MSG` and exits with status 1: the environment is broken.
pub fn fatal(msg: impl std::fmt::Display) -> ! {
    match LOGGER.get() {
        Some(l) => l.emit(&format!("fatal: {msg}")),
        None => eprintln!("fatal: {msg}"),
    }
    std::process::exit(1)
}
