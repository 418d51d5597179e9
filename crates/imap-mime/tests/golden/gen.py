#!/usr/bin/env python3
"""Regenerates the golden answers under this directory from Dovecot's imap binary.

Run as root on a machine with dovecot-imapd installed:
    python3 crates/imap-mime/tests/golden/gen.py
Each message in ../messages/NAME.eml is put alone in a throwaway Maildir, and for every
FETCH item below Dovecot's answer is stored as golden/NAME/ITEM (spaces in ITEM as '_').
Metadata items (ENVELOPE, BODYSTRUCTURE, BODY, RFC822.SIZE) are stored as sent; body
sections are stored as their content (the literal's bytes; NIL or "" as an empty file).
Items Dovecot refuses are not stored.
"""
import os, pathlib, shutil, subprocess, tempfile, re

HERE = pathlib.Path(__file__).resolve().parent
MESSAGES = HERE.parent / "messages"
ITEMS = ["ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE"]
SECTIONS = ["", "HEADER", "TEXT", "1", "1.MIME", "1.TEXT", "1.HEADER", "2", "2.MIME",
            "2.HEADER", "2.TEXT", "1.1", "1.2", "2.1", "2.1.MIME", "2.2", "3",
            "HEADER.FIELDS (FROM SUBJECT)", "HEADER.FIELDS.NOT (FROM SUBJECT DATE)",
            "HEADER.FIELDS (X-NONE)", "2.HEADER.FIELDS (subject)", "1.1.MIME",
            # RFC 3501 §6.4.5's example (messages/rfc3501.eml has its structure)
            "3.HEADER", "3.TEXT", "3.1", "3.2", "4", "4.1", "4.1.MIME", "4.2", "4.2.HEADER",
            "4.2.TEXT", "4.2.1", "4.2.2", "4.2.2.1", "4.2.2.2", "4.2.2.2.MIME"]

def fetch_all(msg: bytes):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="petrel-golden-"))
    try:
        for d in ("cur", "new", "tmp"):
            (tmp / "md" / d).mkdir(parents=True)
        (tmp / "md" / "cur" / "1.golden:2,").write_bytes(msg)
        conf = tmp / "dovecot.conf"
        conf.write_text(f"mail_location = maildir:{tmp}/md\nlog_path = {tmp}/log\nssl = no\n"
                        "mail_uid = nobody\nmail_gid = nogroup\n")
        shutil.chown(tmp, "nobody", "nogroup")
        for root, dirs, files in os.walk(tmp):
            for n in dirs + files:
                shutil.chown(os.path.join(root, n), "nobody", "nogroup")
        items = ITEMS + [f"BODY.PEEK[{s}]" for s in SECTIONS]
        env = {"HOME": str(tmp), "USER": "nobody", "PATH": "/usr/bin:/bin"}
        results = {}
        for it in items:
            # One process per item: Dovecot may answer pipelined FETCHes out of order.
            script = f"s SELECT INBOX\r\nf FETCH 1 ({it})\r\nz LOGOUT\r\n".encode()
            out = subprocess.run(["/usr/lib/dovecot/imap", "-c", str(conf)], input=script,
                                 env=env, capture_output=True, check=True).stdout
            start = out.index(b"\r\n", out.index(b"\r\ns OK") + 2) + 2
            end = out.index(b"\r\nf ", start - 2)
            tagged = out[end + 2:out.index(b"\r\n", end + 2)]
            if not tagged.startswith(b"f OK") or end < start:
                continue
            resp = out[start:end]
            prefix = b"* 1 FETCH ("
            assert resp.startswith(prefix), resp
            assert resp.endswith(b")"), resp
            body = resp[len(prefix):-1]
            # item name: up to the first space outside brackets
            depth = 0
            for j, c in enumerate(body):
                if c == ord("["):
                    depth += 1
                elif c == ord("]"):
                    depth -= 1
                elif c == ord(" ") and depth == 0:
                    break
            value = body[j + 1:]
            name = it.replace("BODY.PEEK", "BODY")
            if name.startswith("BODY["):
                m = re.match(rb"\{(\d+)\}\r\n", value)
                if m:
                    n = int(m.group(1))
                    assert len(value) == m.end() + n, (value, n)
                    value = value[m.end():]
                elif value in (b"NIL", b'""'):
                    value = b""
                else:
                    raise ValueError(value)
            results[name] = value
        return results
    finally:
        shutil.rmtree(tmp)

def main():
    for path in sorted(MESSAGES.glob("*.eml")):
        outdir = HERE / path.stem
        if outdir.exists():
            shutil.rmtree(outdir)
        outdir.mkdir()
        for name, value in fetch_all(path.read_bytes()).items():
            (outdir / name.replace(" ", "_")).write_bytes(value)
        print(path.stem, len(list(outdir.iterdir())))

if __name__ == "__main__":
    main()
