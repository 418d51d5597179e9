//! The queue-file format, version 1. Maildrop files (written by postdrop) use it too.
//!
//! ```text
//! file    = magic record*            magic = "PETRELQ" 0x01   (the last byte is the version)
//! record  = type:u8 length:u32be payload[length]
//! ```
//!
//! | type | payload | count |
//! |------|---------|-------|
//! | `T`  | arrival time, `secs.micros` in ASCII | 1, first |
//! | `S`  | envelope sender (empty for the null sender `<>`) | 1 |
//! | `A`  | attribute `name=value` (protocol, client, helo, uid, envid, ret, …) | 0+ |
//! | `R`  | pending recipient: `address NUL orcpt NUL notify` | 0+ |
//! | `r`  | the same, done (delivered, bounced or expired): `R` overwritten in place | 0+ |
//! | `M`  | the message, LF line ends, length patched when the content is complete | 1 |
//! | `E`  | end marker (empty); a file without it is incomplete | 1, last |
//!
//! A recipient is marked done by overwriting its type byte in place (one `pwrite` of one
//! byte, then `fdatasync`), so the mark never changes the file's length or layout.
//! A queue file is complete when its `E` record is written, it has been fsynced, and its
//! mode has the owner-execute bit (0700): qmgr and pickup ignore files without that bit
//! (they are being written) unless they are stale.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The first eight bytes of every queue file; the last byte is the format version.
pub const MAGIC: &[u8; 8] = b"PETRELQ\x01";
/// Mode of a file being written.
pub const MODE_WRITING: u32 = 0o600;
/// Mode of a complete file (see the module docs).
pub const MODE_COMPLETE: u32 = 0o700;
/// Mode of a complete maildrop file (readable by pickup; maildrop/ itself is not listable).
pub const MODE_MAILDROP_COMPLETE: u32 = 0o644;
/// Largest header record payload accepted when reading (the message record aside).
pub const MAX_RECORD: u32 = 1 << 20;

/// Record type bytes.
pub mod rec {
    /// Arrival time.
    pub const TIME: u8 = b'T';
    /// Envelope sender.
    pub const SENDER: u8 = b'S';
    /// Attribute.
    pub const ATTR: u8 = b'A';
    /// Pending recipient.
    pub const RCPT: u8 = b'R';
    /// Recipient done.
    pub const RCPT_DONE: u8 = b'r';
    /// Message content.
    pub const MESSAGE: u8 = b'M';
    /// End of file.
    pub const END: u8 = b'E';
}

/// A recipient as stored in a queue file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recipient {
    /// The address, as given in the envelope.
    pub address: String,
    /// RFC 3461 ORCPT, if given (`rfc822;addr`).
    pub orcpt: String,
    /// RFC 3461 NOTIFY, comma-separated (empty = default: failure, delay).
    pub notify: String,
    /// Done (delivered, bounced or expired).
    pub done: bool,
    /// Offset of the record's type byte, for [`mark_done`].
    pub offset: u64,
}

/// Everything in a queue file but the message itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Envelope {
    /// Arrival time, seconds since the epoch.
    pub arrival: f64,
    /// Envelope sender; empty for `<>`.
    pub sender: String,
    /// Attributes in file order.
    pub attrs: Vec<(String, String)>,
    /// Recipients in file order.
    pub recipients: Vec<Recipient>,
    /// Offset of the first byte of the message.
    pub content_offset: u64,
    /// Length of the message.
    pub content_len: u64,
}

impl Envelope {
    /// The value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Recipients not yet done.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients.iter().filter(|r| !r.done)
    }
}

/// Why a file could not be read as a queue file.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be read at all (it may have vanished).
    Io(io::Error),
    /// The bytes are not a valid queue file; the string says where and why.
    Corrupt(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Corrupt(s) => write!(f, "corrupt queue file: {s}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Writes a queue file front to back.
pub struct Writer {
    out: BufWriter<File>,
    pos: u64,
    content_start: Option<u64>,
    content_len: u64,
}

fn record_header(kind: u8, len: usize) -> io::Result<[u8; 5]> {
    let len = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
    let l = len.to_be_bytes();
    Ok([kind, l[0], l[1], l[2], l[3]])
}

impl Writer {
    /// Creates `path` exclusively (mode 0600) and writes the magic and arrival time.
    pub fn create(path: impl AsRef<Path>, arrival: f64) -> io::Result<Writer> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE_WRITING)
            .open(path)?;
        let mut w = Writer {
            out: BufWriter::with_capacity(64 * 1024, f),
            pos: 0,
            content_start: None,
            content_len: 0,
        };
        w.out.write_all(MAGIC)?;
        w.pos = MAGIC.len() as u64;
        w.record(rec::TIME, format!("{arrival:.6}").as_bytes())?;
        Ok(w)
    }

    fn record(&mut self, kind: u8, payload: &[u8]) -> io::Result<u64> {
        let at = self.pos;
        self.out.write_all(&record_header(kind, payload.len())?)?;
        self.out.write_all(payload)?;
        self.pos += 5 + payload.len() as u64;
        Ok(at)
    }

    /// Writes the envelope sender (empty for `<>`).
    pub fn sender(&mut self, sender: &str) -> io::Result<()> {
        self.record(rec::SENDER, sender.as_bytes()).map(|_| ())
    }

    /// Writes an attribute.
    pub fn attr(&mut self, name: &str, value: &str) -> io::Result<()> {
        self.record(rec::ATTR, format!("{name}={value}").as_bytes())
            .map(|_| ())
    }

    /// Writes a pending recipient; returns its record offset.
    pub fn recipient(&mut self, r: &Recipient) -> io::Result<u64> {
        let payload = format!("{}\0{}\0{}", r.address, r.orcpt, r.notify);
        self.record(rec::RCPT, payload.as_bytes())
    }

    /// Starts the message record; follow with [`Writer::content`] calls.
    pub fn begin_content(&mut self) -> io::Result<()> {
        self.content_start = Some(self.pos);
        self.out.write_all(&record_header(rec::MESSAGE, 0)?)?;
        self.pos += 5;
        Ok(())
    }

    /// Appends message bytes.
    pub fn content(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        self.content_len += bytes.len() as u64;
        Ok(())
    }

    /// Writes the end record, patches the message length, fsyncs the file and marks it
    /// complete with `mode`. The caller fsyncs the directory.
    pub fn finish(mut self, mode: u32) -> io::Result<File> {
        let start = self
            .content_start
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no message record"))?;
        self.record(rec::END, b"")?;
        let mut f = self.out.into_inner().map_err(|e| e.into_error())?;
        let len = u32::try_from(self.content_len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
        f.write_all_at(&len.to_be_bytes(), start + 1)?;
        f.sync_all()?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.seek(SeekFrom::Start(0))?;
        Ok(f)
    }
}

/// Reads a queue file's envelope: everything but the message, whose place is recorded.
pub fn read_envelope(f: &mut File) -> Result<Envelope, ReadError> {
    let total = f.metadata()?.len();
    let mut r = io::BufReader::with_capacity(16 * 1024, &mut *f);
    r.seek(SeekFrom::Start(0))?;
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| ReadError::Corrupt("shorter than the magic number".into()))?;
    if magic[..7] != MAGIC[..7] {
        return Err(ReadError::Corrupt("bad magic number".into()));
    }
    if magic[7] != MAGIC[7] {
        return Err(ReadError::Corrupt(format!(
            "unsupported version {}",
            magic[7]
        )));
    }
    let mut env = Envelope::default();
    let mut pos = MAGIC.len() as u64;
    let (mut seen_time, mut seen_sender, mut seen_msg) = (false, false, false);
    loop {
        let mut hdr = [0u8; 5];
        if r.read_exact(&mut hdr).is_err() {
            return Err(ReadError::Corrupt(format!(
                "no end record (truncated at offset {pos})"
            )));
        }
        let kind = hdr[0];
        let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]);
        let at = pos;
        pos += 5;
        if pos + u64::from(len) > total {
            return Err(ReadError::Corrupt(format!(
                "record {:?} at offset {at} runs past the end of the file",
                kind as char
            )));
        }
        if kind == rec::MESSAGE {
            if seen_msg {
                return Err(ReadError::Corrupt("two message records".into()));
            }
            seen_msg = true;
            env.content_offset = pos;
            env.content_len = u64::from(len);
            pos += u64::from(len);
            r.seek(SeekFrom::Start(pos))?;
            continue;
        }
        if len > MAX_RECORD {
            return Err(ReadError::Corrupt(format!(
                "record {:?} at offset {at} is {len} bytes",
                kind as char
            )));
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload)?;
        pos += u64::from(len);
        let text = String::from_utf8(payload).map_err(|_| {
            ReadError::Corrupt(format!(
                "record {:?} at offset {at} is not UTF-8",
                kind as char
            ))
        })?;
        let bad = |what: &str| ReadError::Corrupt(format!("{what} at offset {at}"));
        match kind {
            rec::TIME if !seen_time && at == MAGIC.len() as u64 => {
                env.arrival = text.parse().map_err(|_| bad("bad time record"))?;
                seen_time = true;
            }
            rec::SENDER if seen_time && !seen_sender && !seen_msg => {
                env.sender = text;
                seen_sender = true;
            }
            rec::ATTR if seen_sender && !seen_msg => {
                let (n, v) = text
                    .split_once('=')
                    .ok_or_else(|| bad("attribute without '='"))?;
                env.attrs.push((n.to_string(), v.to_string()));
            }
            rec::RCPT | rec::RCPT_DONE if seen_sender && !seen_msg => {
                let mut parts = text.splitn(3, '\0');
                let address = parts.next().unwrap_or_default().to_string();
                let orcpt = parts.next().ok_or_else(|| bad("short recipient record"))?;
                let notify = parts.next().ok_or_else(|| bad("short recipient record"))?;
                env.recipients.push(Recipient {
                    address,
                    orcpt: orcpt.to_string(),
                    notify: notify.to_string(),
                    done: kind == rec::RCPT_DONE,
                    offset: at,
                });
            }
            rec::END if seen_msg && len == 0 => {
                if pos != total {
                    return Err(bad("data after the end record"));
                }
                return Ok(env);
            }
            other => {
                return Err(bad(&format!("unexpected record type {:?}", other as char)));
            }
        }
    }
}

/// Marks the recipient whose record starts at `offset` as done. Durable after the caller's
/// `fdatasync` (one per batch of marks).
pub fn mark_done(f: &File, offset: u64) -> io::Result<()> {
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset)?;
    if b[0] != rec::RCPT && b[0] != rec::RCPT_DONE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("offset {offset} is not a recipient record"),
        ));
    }
    f.write_all_at(&[rec::RCPT_DONE], offset)
}

/// Reads the whole message of a queue file.
pub fn read_content(f: &File, env: &Envelope) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; env.content_len as usize];
    f.read_exact_at(&mut buf, env.content_offset)?;
    Ok(buf)
}

/// True when the file's mode marks it complete.
pub fn is_complete(meta: &std::fs::Metadata) -> bool {
    meta.permissions().mode() & 0o100 != 0
}

/// A readable dump of a queue file, like Postfix's `postcat`.
pub fn dump(f: &mut File, with_body: bool) -> Result<String, ReadError> {
    let env = read_envelope(f)?;
    let mut s = String::new();
    use std::fmt::Write as _;
    let secs = env.arrival as i64;
    let _ = writeln!(s, "*** ENVELOPE RECORDS ***");
    let _ = writeln!(s, "message_size: {}", env.content_len);
    let _ = writeln!(
        s,
        "message_arrival_time: {secs} ({})",
        crate::rfc2822_date(secs)
    );
    let _ = writeln!(s, "sender: {}", env.sender);
    for (n, v) in &env.attrs {
        let _ = writeln!(s, "named_attribute: {n}={v}");
    }
    for r in &env.recipients {
        let label = if r.done {
            "done_recipient"
        } else {
            "recipient"
        };
        let _ = write!(s, "{label}: {}", r.address);
        if !r.orcpt.is_empty() {
            let _ = write!(s, " orcpt={}", r.orcpt);
        }
        if !r.notify.is_empty() {
            let _ = write!(s, " notify={}", r.notify);
        }
        s.push('\n');
    }
    if with_body {
        let _ = writeln!(s, "*** MESSAGE CONTENTS ***");
        let body = read_content(f, &env)?;
        s.push_str(&String::from_utf8_lossy(&body));
        if !body.ends_with(b"\n") {
            s.push('\n');
        }
    }
    let _ = writeln!(s, "*** END OF MESSAGE ***");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> (std::path::PathBuf, Vec<u64>) {
        let path = dir.join("Q");
        let mut w = Writer::create(&path, 1700000000.25).unwrap();
        w.sender("alice@example.org").unwrap();
        w.attr("protocol", "local").unwrap();
        w.attr("uid", "1000").unwrap();
        let mut offs = Vec::new();
        for a in ["bob@example.org", "carol@example.org"] {
            offs.push(
                w.recipient(&Recipient {
                    address: a.into(),
                    orcpt: format!("rfc822;{a}"),
                    notify: "FAILURE".into(),
                    ..Default::default()
                })
                .unwrap(),
            );
        }
        w.begin_content().unwrap();
        w.content(b"Subject: hi\n\n").unwrap();
        w.content(b"body\n").unwrap();
        w.finish(MODE_COMPLETE).unwrap();
        (path, offs)
    }

    #[test]
    fn round_trip_and_mark_done() {
        let d = tempfile::tempdir().unwrap();
        let (path, offs) = sample(d.path());
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert!(is_complete(&f.metadata().unwrap()));
        let env = read_envelope(&mut f).unwrap();
        assert_eq!(env.sender, "alice@example.org");
        assert_eq!(env.arrival, 1700000000.25);
        assert_eq!(env.attr("uid"), Some("1000"));
        assert_eq!(env.recipients.len(), 2);
        assert_eq!(env.recipients[1].orcpt, "rfc822;carol@example.org");
        assert_eq!(env.recipients[0].offset, offs[0]);
        assert_eq!(read_content(&f, &env).unwrap(), b"Subject: hi\n\nbody\n");
        let len_before = f.metadata().unwrap().len();
        mark_done(&f, offs[1]).unwrap();
        let env2 = read_envelope(&mut f).unwrap();
        assert_eq!(f.metadata().unwrap().len(), len_before);
        assert!(!env2.recipients[0].done);
        assert!(env2.recipients[1].done);
        assert_eq!(env2.pending().count(), 1);
        assert!(
            mark_done(&f, offs[1] + 1).is_err(),
            "only recipient records can be marked"
        );
        let text = dump(&mut f, true).unwrap();
        assert!(text.contains("done_recipient: carol@example.org"), "{text}");
        assert!(
            text.contains("recipient: bob@example.org orcpt=rfc822;bob@example.org notify=FAILURE")
        );
        assert!(text.contains("body\n*** END OF MESSAGE ***"));
    }

    #[test]
    fn every_truncation_and_byte_flip_is_detected_or_harmless() {
        let d = tempfile::tempdir().unwrap();
        let (path, _) = sample(d.path());
        let good = std::fs::read(&path).unwrap();
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            let mut f = File::open(&path).unwrap();
            assert!(
                matches!(read_envelope(&mut f), Err(ReadError::Corrupt(_))),
                "truncated at {cut} must be corrupt"
            );
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xA5;
            std::fs::write(&path, &bad).unwrap();
            let mut f = File::open(&path).unwrap();
            // Either detected, or a well-formed file (a flipped byte inside text); never a panic.
            let _ = read_envelope(&mut f);
        }
    }

    #[test]
    fn incomplete_writer_leaves_an_incomplete_mode() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("W");
        let mut w = Writer::create(&path, 1.0).unwrap();
        w.sender("").unwrap();
        drop(w);
        assert!(!is_complete(&std::fs::metadata(&path).unwrap()));
        assert!(Writer::create(&path, 1.0).is_err(), "create is exclusive");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join("X");
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(&bytes);
            std::fs::write(&path, &data).unwrap();
            let mut f = File::open(&path).unwrap();
            let _ = read_envelope(&mut f);
        }
    }
}
