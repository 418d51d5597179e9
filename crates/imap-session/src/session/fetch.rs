//! FETCH and STORE (and their UID forms).

use std::borrow::Cow;
use std::io::{self, Write as _};

use petrel_imap_mime as mime;
use petrel_imap_proto::{
    astring, format_internal_date, FetchItem, Flag, Section, SectionText, SequenceSet, StoreMode,
};
use petrel_mailstore::{FlagSet, Folder, MessageInfo};

use super::{apply_store, flag_list, io_error, resync, uid_set, Reply, Selected, Session};
use crate::tz::local_offset_minutes;

/// Cache kind of the ENVELOPE blob.
const CACHE_ENVELOPE: u8 = 1;
/// Cache kind of the BODYSTRUCTURE blob.
const CACHE_BODYSTRUCTURE: u8 = 2;

/// The `section` of a `BODY[section]` response item, as RFC 3501 writes it.
pub(crate) fn section_spec(s: &Section) -> Vec<u8> {
    let mut out = Vec::new();
    let parts: Vec<String> = s.part.iter().map(u32::to_string).collect();
    out.extend_from_slice(parts.join(".").as_bytes());
    if let Some(t) = &s.text {
        if !s.part.is_empty() {
            out.push(b'.');
        }
        let names = |out: &mut Vec<u8>, kw: &str, v: &[String]| {
            out.extend_from_slice(kw.as_bytes());
            out.extend_from_slice(b" (");
            for (i, n) in v.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(&astring(n.as_bytes()));
            }
            out.push(b')');
        };
        match t {
            SectionText::Header => out.extend_from_slice(b"HEADER"),
            SectionText::HeaderFields(v) => names(&mut out, "HEADER.FIELDS", v),
            SectionText::HeaderFieldsNot(v) => names(&mut out, "HEADER.FIELDS.NOT", v),
            SectionText::Text => out.extend_from_slice(b"TEXT"),
            SectionText::Mime => out.extend_from_slice(b"MIME"),
        }
    }
    out
}

/// `<offset.length>` applied to `data`.
pub(crate) fn partial(data: &[u8], p: Option<(u32, u32)>) -> &[u8] {
    match p {
        None => data,
        Some((off, len)) => {
            let start = (off as usize).min(data.len());
            let end = start.saturating_add(len as usize).min(data.len());
            &data[start..end]
        }
    }
}

/// A literal `{n}\r\n...`.
fn literal(out: &mut Vec<u8>, data: &[u8]) {
    let _ = write!(out, "{{{}}}\r\n", data.len());
    out.extend_from_slice(data);
}

/// A literal of the CRLF form of `data` (a message as stored, LF or CRLF), converted
/// straight into `out`.
fn crlf_literal(out: &mut Vec<u8>, data: &[u8]) {
    let _ = write!(out, "{{{}}}\r\n", mime::crlf_len(data));
    mime::to_crlf_into(data, out);
}

/// The CRLF form of a message as stored, without a copy when it is CRLF already.
fn into_crlf(raw: Vec<u8>) -> Vec<u8> {
    match mime::to_crlf(&raw) {
        Cow::Owned(v) => v,
        Cow::Borrowed(_) => raw,
    }
}

/// Reads a message as stored (LF or CRLF). A file renamed by another process is found
/// again after a re-sync (its updates go to `extra`); `None` when it is gone.
fn load(
    sel: &mut Selected,
    folder: &mut Folder,
    uid: u32,
    condstore: bool,
    extra: &mut Vec<u8>,
) -> io::Result<Option<Vec<u8>>> {
    for attempt in 0..2 {
        let Some(path) = folder.path(uid) else {
            return Ok(None);
        };
        match std::fs::read(&path) {
            Ok(raw) => return Ok(Some(raw)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => {
                resync(sel, folder, condstore, false, true, extra)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Sets flags (a change of this session's own, not announced to it again), re-syncing
/// once when another process renamed the file meanwhile. `false` when the message is
/// gone.
fn set_flags(
    sel: &mut Selected,
    folder: &mut Folder,
    uid: u32,
    flags: &FlagSet,
    condstore: bool,
    extra: &mut Vec<u8>,
) -> io::Result<bool> {
    for attempt in 0..2 {
        let Some(before) = folder.get(uid).map(|m| m.modseq) else {
            return Ok(false);
        };
        match folder.set_flags(uid, flags) {
            Ok(()) => {
                if let Some(m) = folder.get(uid) {
                    sel.own_change(before, m.modseq);
                }
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => {
                resync(sel, folder, condstore, false, true, extra)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// A FETCH being answered: what it asks for and how far the answer got. A streamed answer
/// ([`Session::set_streaming`]) keeps it in the session between its pieces.
#[derive(Debug)]
pub(super) struct FetchJob {
    /// The command's tag (for the tagged completion of a streamed answer).
    tag: String,
    items: Vec<FetchItem>,
    changed_since: Option<u64>,
    /// The messages asked for, as `(seq, uid)` in the client's view when the command came.
    targets: Vec<(u32, u32)>,
    /// The first of `targets` not answered yet.
    next: usize,
    /// The items set `\Seen` (and the mailbox is not read-only).
    sets_seen: bool,
    /// UID FETCH without UID among the items: UID goes first.
    uid_first: bool,
    want_flags: bool,
    want_modseq: bool,
    /// Untagged updates from re-syncs on the way (a file renamed by another process),
    /// sent after the FETCH responses.
    extra: Vec<u8>,
    /// Some messages were gone.
    gone: bool,
    /// Messages whose file was read for this answer (for the logout line's counts).
    pub(super) loaded: u64,
}

impl FetchJob {
    /// The command's tag.
    pub(super) fn tag(&self) -> &str {
        &self.tag
    }

    /// The heap memory the job holds (for [`Session::view_bytes`]).
    pub(super) fn heap_bytes(&self) -> usize {
        self.tag.capacity()
            + self.items.capacity() * std::mem::size_of::<FetchItem>()
            + self.targets.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.extra.capacity()
    }

    /// Answers the messages from `next` on into `out`: all of them when `limit` is
    /// `None`, else until `out` holds `limit` bytes or more (after at least one message).
    /// `Some(reply)` when the answer is complete (the tagged reply; `extra` has been
    /// written), `None` when messages remain. An `Err` ends the command; `out` holds no
    /// part of the message being answered then.
    fn run(
        &mut self,
        sel: &mut Selected,
        folder: &mut Folder,
        condstore: bool,
        limit: Option<usize>,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<Reply>> {
        let FetchJob {
            items,
            changed_since,
            targets,
            next,
            sets_seen,
            uid_first,
            want_flags,
            want_modseq,
            extra,
            gone,
            loaded,
            ..
        } = self;
        let (changed_since, sets_seen) = (*changed_since, *sets_seen);
        let (uid_first, want_flags, want_modseq) = (*uid_first, *want_flags, *want_modseq);
        let begin = *next;
        while let Some(&(seq, uid)) = targets.get(*next) {
            if limit.is_some_and(|l| *next > begin && out.len() >= l) {
                return Ok(None);
            }
            *next += 1;
            let Some(info) = folder.get(uid).cloned() else {
                *gone = true;
                continue;
            };
            if changed_since.is_some_and(|cs| info.modseq <= cs) {
                continue;
            }
            let mut info: MessageInfo = info;
            let mut seen_now = false;
            if sets_seen && !info.flags.seen {
                let mut f = info.flags.clone();
                f.seen = true;
                match set_flags(sel, folder, uid, &f, condstore, extra) {
                    Ok(true) => seen_now = true,
                    Ok(false) => {}
                    Err(e) => return Ok(Some(io_error(&e))),
                }
                match folder.get(uid) {
                    Some(i) => info = i.clone(),
                    None => {
                        *gone = true;
                        continue;
                    }
                }
            }
            let recent = sel.recent.contains(uid);
            // The message as stored; converted to the CRLF form (in place, once) only for
            // the items that parse it or take offsets in it.
            let mut data: Option<Vec<u8>> = None;
            let mut converted = false;
            // The response goes straight into `out`, cut back to `start` if the message is
            // gone or an error ends the command (no half response before the tagged NO).
            let start = out.len();
            let mut missing = false;
            let _ = write!(out, "* {seq} FETCH (");
            let mut first = true;
            let mut sep = |out: &mut Vec<u8>| {
                if !first {
                    out.push(b' ');
                }
                first = false;
            };
            if uid_first {
                sep(out);
                let _ = write!(out, "UID {uid}");
            }
            for item in items.iter() {
                // An I/O error: this message's part of the response is dropped.
                macro_rules! try_io {
                    ($e:expr) => {
                        match $e {
                            Ok(v) => v,
                            Err(e) => {
                                out.truncate(start);
                                return Err(e);
                            }
                        }
                    };
                }
                // Loads the message once, when an item needs it: as stored (LF or CRLF; for
                // what only needs the CRLF form's bytes or length)...
                macro_rules! msg {
                    () => {{
                        if data.is_none() {
                            data = try_io!(load(sel, folder, uid, condstore, extra));
                            if data.is_some() {
                                *loaded += 1;
                            }
                        }
                        match data.as_deref() {
                            Some(d) => d,
                            None => {
                                missing = true;
                                break;
                            }
                        }
                    }};
                }
                // ... or in the CRLF form (for what parses it or takes offsets in it).
                macro_rules! crlf {
                    () => {{
                        if data.is_none() {
                            data = try_io!(load(sel, folder, uid, condstore, extra));
                        }
                        if !converted {
                            data = data.take().map(into_crlf);
                            converted = true;
                        }
                        match data.as_deref() {
                            Some(d) => d,
                            None => {
                                missing = true;
                                break;
                            }
                        }
                    }};
                }
                match item {
                    FetchItem::Uid => {
                        sep(out);
                        let _ = write!(out, "UID {uid}");
                    }
                    FetchItem::Flags => {
                        sep(out);
                        let _ = write!(out, "FLAGS {}", flag_list(&info.flags, recent));
                    }
                    FetchItem::InternalDate => {
                        // In the server's time zone, as Dovecot shows it.
                        let t = info.internaldate;
                        sep(out);
                        let _ = write!(
                            out,
                            "INTERNALDATE \"{}\"",
                            format_internal_date(t, local_offset_minutes(t))
                        );
                    }
                    FetchItem::Rfc822Size => {
                        let size = match folder.rfc822_size(uid) {
                            Ok(s) => s,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                mime::crlf_len(msg!()) as u64
                            }
                            Err(e) => try_io!(Err(e)),
                        };
                        sep(out);
                        let _ = write!(out, "RFC822.SIZE {size}");
                    }
                    FetchItem::ModSeq => {
                        sep(out);
                        let _ = write!(out, "MODSEQ ({})", info.modseq);
                    }
                    FetchItem::Envelope | FetchItem::BodyStructure => {
                        let (kind, label) = if *item == FetchItem::Envelope {
                            (CACHE_ENVELOPE, "ENVELOPE ")
                        } else {
                            (CACHE_BODYSTRUCTURE, "BODYSTRUCTURE ")
                        };
                        let blob = match folder.cache(uid, kind) {
                            Some(b) => b.to_vec(),
                            None => {
                                let d = crlf!();
                                let b = if kind == CACHE_ENVELOPE {
                                    mime::envelope(d)
                                } else {
                                    mime::body_structure(d, true)
                                };
                                try_io!(folder.set_cache(uid, kind, &b));
                                b
                            }
                        };
                        sep(out);
                        out.extend_from_slice(label.as_bytes());
                        out.extend_from_slice(&blob);
                    }
                    FetchItem::Body => {
                        let b = mime::body_structure(crlf!(), false);
                        sep(out);
                        out.extend_from_slice(b"BODY ");
                        out.extend_from_slice(&b);
                    }
                    FetchItem::Rfc822 => {
                        let d = msg!();
                        sep(out);
                        out.extend_from_slice(b"RFC822 ");
                        crlf_literal(out, d);
                    }
                    FetchItem::Rfc822Header => {
                        let h = mime::section_ref(crlf!(), &[], Some(&mime::SectionText::Header));
                        sep(out);
                        out.extend_from_slice(b"RFC822.HEADER ");
                        literal(out, &h);
                    }
                    FetchItem::Rfc822Text => {
                        let t = mime::section_ref(crlf!(), &[], Some(&mime::SectionText::Text));
                        sep(out);
                        out.extend_from_slice(b"RFC822.TEXT ");
                        literal(out, &t);
                    }
                    FetchItem::BodySection {
                        section,
                        partial: p,
                        ..
                    } => {
                        sep(out);
                        out.extend_from_slice(b"BODY[");
                        out.extend_from_slice(&section_spec(section));
                        out.push(b']');
                        if let Some((off, _)) = p {
                            let _ = write!(out, "<{off}>");
                        }
                        out.push(b' ');
                        // BODY[] in full: the stored bytes converted straight into the
                        // response; anything else is cut from the CRLF form.
                        if section.part.is_empty() && section.text.is_none() && p.is_none() {
                            let d = msg!();
                            crlf_literal(out, d);
                        } else {
                            let d = crlf!();
                            let c = mime::section_ref(d, &section.part, section.text.as_ref());
                            literal(out, partial(&c, *p));
                        }
                    }
                }
            }
            if missing {
                out.truncate(start);
                *gone = true;
                continue;
            }
            if seen_now && !want_flags {
                sep(out);
                let _ = write!(out, "FLAGS {}", flag_list(&info.flags, recent));
            }
            if !want_modseq && (changed_since.is_some() || (seen_now && condstore)) {
                sep(out);
                let _ = write!(out, "MODSEQ ({})", info.modseq);
            }
            out.extend_from_slice(b")\r\n");
        }
        out.extend_from_slice(extra);
        Ok(Some(if *gone {
            Reply::Ok("Fetch completed; some messages were expunged meanwhile.".into())
        } else {
            Reply::Ok("Fetch completed.".into())
        }))
    }
}

impl Session {
    /// FETCH and UID FETCH. With streaming on, [`Reply::More`] when the answer continues
    /// in [`Session::resume`] (the job is kept in `fetching`).
    pub(super) fn fetch(
        &mut self,
        tag: &str,
        uid_cmd: bool,
        set: &SequenceSet,
        items: Vec<FetchItem>,
        changed_since: Option<u64>,
        out: &mut Vec<u8>,
    ) -> io::Result<Reply> {
        if changed_since.is_some() || items.contains(&FetchItem::ModSeq) {
            self.condstore = true;
        }
        let condstore = self.condstore;
        let limit = self.chunk;
        let Some(sel) = self.selected.as_mut() else {
            return Ok(Reply::Bad("No mailbox selected".into()));
        };
        let targets = match sel.targets(set, uid_cmd) {
            Ok(t) => t,
            Err(e) => return Ok(Reply::Bad(e)),
        };
        let shared = sel.shared.clone();
        let mut folder = shared.folder()?;
        let sets_seen = !sel.read_only
            && items.iter().any(|i| {
                matches!(
                    i,
                    FetchItem::Rfc822
                        | FetchItem::Rfc822Text
                        | FetchItem::BodySection { peek: false, .. }
                )
            });
        // UID FETCH puts UID first unless it was asked for (then it goes where asked).
        let uid_first = uid_cmd && !items.contains(&FetchItem::Uid);
        let want_flags = items.contains(&FetchItem::Flags);
        let want_modseq = items.contains(&FetchItem::ModSeq);
        let mut job = FetchJob {
            tag: tag.to_string(),
            items,
            changed_since,
            targets,
            next: 0,
            sets_seen,
            uid_first,
            want_flags,
            want_modseq,
            extra: Vec::new(),
            gone: false,
            loaded: 0,
        };
        let result = job.run(sel, &mut folder, condstore, limit, out);
        self.counts.fetched += std::mem::take(&mut job.loaded);
        match result? {
            Some(reply) => Ok(reply),
            None => {
                drop(folder);
                self.fetching = Some(job);
                Ok(Reply::More)
            }
        }
    }

    /// The next piece of a streamed FETCH answer (see [`FetchJob::run`]). The folder may
    /// have changed since the last piece (other sessions): messages gone meanwhile are
    /// left out; after a UIDVALIDITY change all of the rest is (its UIDs may name other
    /// messages now), and the updates at the end of the command end the session.
    pub(super) fn fetch_more(
        &mut self,
        job: &mut FetchJob,
        limit: Option<usize>,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<Reply>> {
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else {
            // Cannot happen: no command runs while a FETCH answer is in progress.
            return Ok(Some(Reply::Bad("No mailbox selected".into())));
        };
        let shared = sel.shared.clone();
        let mut folder = shared.folder()?;
        if folder.uidvalidity() != sel.uidvalidity && job.next < job.targets.len() {
            job.next = job.targets.len();
            job.gone = true;
        }
        let result = job.run(sel, &mut folder, condstore, limit, out);
        self.counts.fetched += std::mem::take(&mut job.loaded);
        result
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn store(
        &mut self,
        uid_cmd: bool,
        set: &SequenceSet,
        mode: StoreMode,
        silent: bool,
        flags: &[Flag],
        unchanged_since: Option<u64>,
        out: &mut Vec<u8>,
    ) -> io::Result<Reply> {
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else {
            return Ok(Reply::Bad("No mailbox selected".into()));
        };
        if sel.read_only {
            return Ok(Reply::No("[READ-ONLY] Mailbox is read-only".into()));
        }
        let targets = match sel.targets(set, uid_cmd) {
            Ok(t) => t,
            Err(e) => return Ok(Reply::Bad(e)),
        };
        let req = FlagSet::from_imap(flags.iter().map(Flag::as_str));
        let shared = sel.shared.clone();
        let mut folder = shared.folder()?;
        let mut modified = Vec::new();
        let mut extra = Vec::new();
        let mut gone = false;
        for (seq, uid) in targets {
            let Some(info) = folder.get(uid) else {
                gone = true;
                continue;
            };
            if unchanged_since.is_some_and(|u| info.modseq > u) {
                modified.push(if uid_cmd { uid } else { seq });
                continue;
            }
            let new = apply_store(mode, &info.flags, &req);
            match set_flags(sel, &mut folder, uid, &new, condstore, &mut extra) {
                Ok(true) => {}
                Ok(false) => {
                    gone = true;
                    continue;
                }
                Err(e) => return Ok(io_error(&e)),
            }
            let Some(m) = folder.get(uid) else {
                continue;
            };
            if silent && !condstore {
                continue;
            }
            let _ = write!(out, "* {seq} FETCH (");
            if uid_cmd {
                let _ = write!(out, "UID {uid} ");
            }
            if condstore {
                let _ = write!(out, "MODSEQ ({})", m.modseq);
                if !silent {
                    out.push(b' ');
                }
            }
            if !silent {
                let _ = write!(
                    out,
                    "FLAGS {}",
                    flag_list(&m.flags, sel.recent.contains(uid))
                );
            }
            out.extend_from_slice(b")\r\n");
        }
        out.extend_from_slice(&extra);
        if !modified.is_empty() {
            modified.sort_unstable();
            return Ok(Reply::Ok(format!(
                "[MODIFIED {}] Conditional STORE failed",
                uid_set(&modified)
            )));
        }
        Ok(if gone {
            Reply::No("Some of the messages no longer exist.".into())
        } else {
            Reply::Ok("Store completed.".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_specs() {
        let s = Section {
            part: vec![1, 2],
            text: Some(SectionText::HeaderFields(vec!["From".into(), "a b".into()])),
        };
        assert_eq!(
            section_spec(&s),
            b"1.2.HEADER.FIELDS (From \"a b\")".to_vec()
        );
        assert_eq!(section_spec(&Section::default()), b"".to_vec());
        let t = Section {
            part: vec![],
            text: Some(SectionText::Text),
        };
        assert_eq!(section_spec(&t), b"TEXT".to_vec());
    }

    #[test]
    fn partials() {
        assert_eq!(partial(b"hello", Some((1, 3))), b"ell");
        assert_eq!(partial(b"hello", Some((3, 10))), b"lo");
        assert_eq!(partial(b"hello", Some((9, 1))), b"");
        assert_eq!(partial(b"hello", None), b"hello");
    }
}
