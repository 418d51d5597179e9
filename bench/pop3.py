#!/usr/bin/env python3
"""POP3 benchmark: Petrel's pop3d and Dovecot's pop3 side by side, Maildir and mbox, same run.

    python3 bench/pop3.py --bin target/release [-n 10000] [--window 50] [--limit 900]
                          [--keep] [--json FILE]

Set-up:
  - a Petrel sandbox (`petrel sandbox DIR --port-base 16000`, POP3 on 127.0.0.1:16110)
    with `pop3d_tls_auth_only = no`, so USER/PASS work on plain POP3; its POP3S service
    is commented out of services.conf, as Dovecot's pop3s listener is disabled;
  - Dovecot (Debian's dovecot-pop3d) from a throwaway config in the same temporary
    directory: `dovecot -c CONF`, base_dir/state_dir/log there, listen = 127.0.0.1,
    `protocols = pop3`, POP3 on 127.0.0.1:16510, ssl = no, disable_plaintext_auth = no, a
    passwd-file with demo and the sandbox's password. Dovecot refuses mail access as
    uid 0, so when this runs as root Dovecot's demo is the `mail` user and the mail is
    chowned to it (Petrel's sandbox, run by root, reads it all the same; the tree is
    chowned again after Petrel has written to it). mail_max_userip_connections is raised
    a little. Dovecot is stopped at the end (doveadm stop, then its master pid is killed
    if still there); it never runs as a system service.
  - the messages: -n messages (2-8 KiB, a few headers, words from a small vocabulary).
    1 % of them have body lines that test the encodings: a line starting with "." (POP3
    dot-stuffing), one starting with "From " and one with ">From " (mboxrd quoting).
  - Maildir case: the messages written straight into the sandbox's home/demo/Maildir/cur
    with Dovecot-style names (`T.MiPpid.bench,S=size,W=vsize:2,`, mtime = the date),
    before either server touches it. Both servers serve that SAME Maildir
    (Petrel: home_mailbox = Maildir/; Dovecot: mail_location = maildir:<it>).
  - mbox case: the same messages in an mboxrd file (`From sender date` separators, a
    blank line after each message, lines matching `>*From ` get one more `>`). Petrel:
    home_mailbox = mbox (petrel.conf rewritten, Petrel restarted) → home/demo/mbox.
    Dovecot gets its own byte-identical copy (mail_location = mbox:DIR:INBOX=COPY,
    restarted), because Dovecot writes X-IMAPbase/X-UID/Status headers into the mbox
    file itself (it hides them again when it sends a message).

Procedure, for each case: each server first gets two warm-up sessions (USER, PASS, STAT,
UIDL, RETR of every message, QUIT; never DELE), so that it builds its index and the files
are in the page cache; the first warm-up session's time is printed (it is not comparable:
whichever server comes first also marks every message \\Seen). All figures are the WARM
case. Then, alternating which server goes first:
  login+STAT    connect, greeting, USER, PASS, STAT (median of 5 fresh connections; the
                median time of each step is printed too: a server that reads its
                maildrop at login shows it in PASS, one that does it lazily in STAT);
  UIDL          `UIDL` of all messages in a logged-in session (median of 3);
  RETR all      one session RETRieving every message in order, pipelined in windows of
                --window commands (the next window is sent before the current one is
                read, so the server never waits for the client); message MB/s = octets
                of message content received (CRLF, un-dot-stuffed) / time from the first
                RETR sent to the last answer read (median of 3);
  memory        peak RSS and PSS of the server's processes during the RETR-all sessions,
                sampled every 50 ms from a thread (Dovecot: every process under its
                master: master, pop3-login, pop3, auth, config, log, anvil, ...; Petrel:
                its pop3d processes: spawner, pop3d-login, pop3d-session), and the peak
                of the session process alone (Dovecot `pop3`, Petrel `pop3d-session`);
  CPU           CPU seconds (user+system) the same processes used from before the
                connection to the last RETR answer, login included, QUIT not (median
                of 3; clock ticks, so 10 ms steps).
Correctness, checked on every RETR-all run: the number of messages RETRieved equals -n,
STAT says -n, the "+OK N octets" of each RETR equals what follows, and the SHA-256 of
each message as received (un-dot-stuffed) equals that of the message written (LF →
CRLF), so both servers sent the same bytes for message k. Any difference is printed and
makes the exit status 1, with one known exception that is printed but accepted: Dovecot
does not undo mboxrd quoting, so from the mbox it sends the 1 % of messages with
`From `/`>From ` lines as stored (`>From `/`>>From `); Petrel must send them unquoted.

The client is a raw-socket one, the same for both servers. Every loop is bounded (counts
and the --limit deadline); every connection is to 127.0.0.1.
"""
import argparse
import email.utils
import hashlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

PETREL_PORT_BASE = 16000
PETREL_POP3 = PETREL_PORT_BASE + 110
DOVECOT_POP3 = 16510
VOCAB = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu the of and "
         "to in is that for on with as was at by an be this which from or have not are but all "
         "meeting report budget quarter schedule review project update team plan release").split()
NL = b"\n"
TERM = b"\r\n.\r\n"


class OutOfTime(Exception):
    pass


# ---------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------


def make_message(i, t, lo, hi):
    rnd = random.Random(i)
    k = i % 50
    head = (f"Return-Path: <sender{k}@example.org>\n"
            f"Date: {email.utils.formatdate(t, localtime=False)}\n"
            f"From: Sender {k} <sender{k}@example.org>\n"
            "To: Demo <demo@sandbox.test>\n"
            f"Subject: Bench message {i} about topic {i % 37}\n"
            f"Message-ID: <bench.{i}@example.org>\n"
            "MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=us-ascii\n\n")
    target = rnd.randint(lo, hi)
    lines, size = [], len(head)
    special = i % 100 == 42  # 1 %: lines for dot-stuffing and mboxrd quoting
    while size < target:
        words, n = [], 0
        while n < 68:
            w = rnd.choice(VOCAB)
            words.append(w)
            n += len(w) + 1
        line = " ".join(words) + "\n"
        if special and len(lines) == 2:
            line = ". a line that starts with a dot\n.\n..two dots\n"
        elif special and len(lines) == 4:
            line = "From the start of this line, mboxrd quotes it\n>From this one too\n"
        lines.append(line)
        size += len(line)
    return (head + "".join(lines)).encode()


def wire_digest(data):
    """SHA-256 of a message as RETR sends it before dot-stuffing: CRLF line ends."""
    return hashlib.sha256(data.replace(NL, b"\r\n")).digest()


def make_messages(n, lo, hi, t_end):
    """[(time, bytes)] for the n messages."""
    return [(t_end - (n - i) * 60, make_message(i, t_end - (n - i) * 60, lo, hi)) for i in range(n)]


def write_maildir(cur, msgs):
    """The messages into `cur` with Dovecot-style names, no flags; returns total bytes."""
    os.makedirs(cur, exist_ok=True)
    total = 0
    pid = os.getpid()
    for i, (t, data) in enumerate(msgs):
        vsize = len(data) + data.count(NL)
        name = f"{t}.M{i}P{pid}.bench,S={len(data)},W={vsize}:2,"
        path = os.path.join(cur, name)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (t, t))
        total += len(data)
    return total


FROM_LINE = re.compile(rb"^(>*From )", re.M)


def write_mbox(path, msgs):
    """The messages as an mboxrd file; returns its size."""
    with open(path, "wb") as f:
        for i, (t, data) in enumerate(msgs):
            f.write(f"From sender{i % 50}@example.org {time.asctime(time.gmtime(t))}\n".encode())
            f.write(FROM_LINE.sub(rb">\1", data))
            f.write(b"\n")
        return f.tell()


# ---------------------------------------------------------------------------------------
# A raw POP3 client
# ---------------------------------------------------------------------------------------


class Client:
    def __init__(self, port, timeout=120):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        self.greeting = self.line()
        if not self.greeting.startswith(b"+OK"):
            raise RuntimeError(f"greeting: {self.greeting[:200]!r}")

    def _fill(self):
        if self.pos > 1 << 20:
            del self.buf[:self.pos]
            self.pos = 0
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def line(self):
        for _ in range(1_000_000):
            eol = self.buf.find(b"\r\n", self.pos)
            if eol >= 0:
                out = bytes(self.buf[self.pos:eol])
                self.pos = eol + 2
                return out
            self._fill()
        raise RuntimeError("response line too long")

    def cmd(self, text, secret=False):
        self.sock.sendall(text.encode() + b"\r\n")
        line = self.line()
        if not line.startswith(b"+OK"):
            what = text.split()[0] if secret else text
            raise RuntimeError(f"{what}: {line.decode(errors='replace')[:200]}")
        return line

    def multi(self, text):
        """A command with a multi-line answer; returns its body (still dot-stuffed, with
        the CRLF before the final dot)."""
        self.cmd(text)
        start = self.pos - 2  # an empty body: ".\r\n" right after the status line's CRLF
        for _ in range(10_000_000):
            end = self.buf.find(TERM, start)
            if end >= 0:
                body = bytes(self.buf[self.pos:end + 2]) if end + 2 > self.pos else b""
                self.pos = end + 5
                return body
            start = max(start, len(self.buf) - 4)
            self._fill()
        raise RuntimeError("multi-line answer too long")

    def login(self, password):
        self.cmd("USER demo")
        self.cmd(f"PASS {password}", secret=True)

    def stat(self):
        f = self.cmd("STAT").split()
        return int(f[1]), int(f[2])

    def retr_all(self, n, window, size_hint):
        """RETR 1..n pipelined in windows; the next window goes out before the current one
        is read. Returns (seconds, buffer, [(status line, body start, body end)]): each
        body is the dot-stuffed message with its final CRLF. Nothing may be pending."""
        if self.pos != len(self.buf):
            raise RuntimeError("unread data before RETR")
        cap = int(size_hint * 1.05) + n * 64 + (1 << 20)
        buf = bytearray(cap)
        mv = memoryview(buf)
        wpos = pos = 0
        spans = []
        windows = [b"".join(b"RETR %d\r\n" % k for k in range(s, min(n, s + window - 1) + 1))
                   for s in range(1, n + 1, window)]
        sock = self.sock

        def fill(wpos):
            nonlocal buf, mv
            if wpos == len(buf):  # the hint was too small: a bigger buffer (rare)
                mv.release()
                buf = buf + bytearray(len(buf))
                mv = memoryview(buf)
            got = sock.recv_into(mv[wpos:], min(1 << 20, len(buf) - wpos))
            if not got:
                raise ConnectionError("connection closed by the server")
            return wpos + got

        t0 = time.perf_counter()
        sock.sendall(windows[0])
        if len(windows) > 1:
            sock.sendall(windows[1])
        k = 0
        for w in range(len(windows)):
            last = min(n, (w + 1) * window)
            while k < last:
                for _ in range(1_000_000):
                    eol = buf.find(b"\r\n", pos, wpos)
                    if eol >= 0:
                        break
                    wpos = fill(wpos)
                status = bytes(buf[pos:eol])
                if not status.startswith(b"+OK"):
                    raise RuntimeError(f"RETR {k + 1}: {status.decode(errors='replace')[:200]}")
                start = eol  # the terminator search may begin at the status line's CRLF
                for _ in range(100_000_000):
                    end = buf.find(TERM, start, wpos)
                    if end >= 0:
                        break
                    start = max(start, wpos - 4)
                    wpos = fill(wpos)
                spans.append((status, eol + 2, end + 2))
                pos = end + 5
                k += 1
            if w + 2 < len(windows):
                sock.sendall(windows[w + 2])
        el = time.perf_counter() - t0
        if wpos != pos:
            raise RuntimeError(f"{wpos - pos} bytes after the last RETR answer")
        mv.release()
        return el, buf, spans

    def quit(self):
        try:
            self.cmd("QUIT")
        finally:
            self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def unstuff(body):
    if body.startswith(b".."):
        body = body[1:]
    return body.replace(b"\r\n..", b"\r\n.")


def check_retr(buf, spans, digests, alt=None):
    """(octets un-stuffed, [problems], [messages equal to their `alt` digest]) for a
    RETR-all run against the expected digests. alt: {index: digest} of an accepted
    variant (Dovecot's mbox: the message as stored, mboxrd quoting kept)."""
    problems, octets, bad_size, bad_digest, quoted = [], 0, [], [], []
    for k, (status, a, b) in enumerate(spans):
        body = unstuff(bytes(buf[a:b])) if b > a else b""
        octets += len(body)
        f = status.split()
        if len(f) < 2 or not f[1].isdigit() or int(f[1]) != len(body):
            bad_size.append(k + 1)
        if k < len(digests) and hashlib.sha256(body).digest() != digests[k]:
            if alt and alt.get(k) == hashlib.sha256(body).digest():
                quoted.append(k + 1)
            else:
                bad_digest.append(k + 1)
    if len(spans) != len(digests):
        problems.append(f"{len(spans)} messages retrieved, {len(digests)} expected")
    if bad_size:
        problems.append(f"{len(bad_size)} RETR sizes differ from the octets sent (messages {bad_size[:5]})")
    if bad_digest:
        problems.append(f"{len(bad_digest)} messages differ from what was written (messages {bad_digest[:5]})")
    return octets, problems, quoted


def message_digests(buf, spans):
    """The SHA-256 of every message received (un-dot-stuffed), in order."""
    return [hashlib.sha256(unstuff(bytes(buf[a:b]))).digest() for _status, a, b in spans]


def short_digest(digests):
    return hashlib.sha256(b"".join(digests)).hexdigest()[:16]


def first_difference(buf, spans, msgs, k):
    """A short description of how message k (1-based) differs from the original."""
    status, a, b = spans[k - 1]
    got = unstuff(bytes(buf[a:b]))
    want = msgs[k - 1][1].replace(NL, b"\r\n")
    i = next((j for j in range(min(len(got), len(want))) if got[j] != want[j]), min(len(got), len(want)))
    return f"message {k}: {len(got)} vs {len(want)} bytes, first difference at {i}: got {got[max(0, i - 20):i + 40]!r}, wrote {want[max(0, i - 20):i + 40]!r}"


# ---------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------


def wait_port(port, limit):
    bl.wait_greeting(port, limit, b"+OK", b"QUIT\r\n", "POP3")


class Petrel:
    name = "petrel"
    port = PETREL_POP3
    session_comm = "pop3d-session"

    def __init__(self, bindir, work):
        self.petrel = os.path.join(bindir, "petrel")
        self.sb = os.path.join(work, "sb")
        self.etc = os.path.join(self.sb, "etc")
        self.pidfile = os.path.join(self.sb, "spool/pid/master.pid")
        self.home = os.path.join(self.sb, "home/demo")
        self.maildir = os.path.join(self.home, "Maildir")
        self.mbox = os.path.join(self.home, "mbox")

    @staticmethod
    def why_not(bindir):
        for p in ("petrel", "master", "pop3d", "authd"):
            if not os.access(os.path.join(bindir, p), os.X_OK):
                return f"{bindir}/{p} is missing: cargo build --release --workspace --bins"
        return None

    def create(self):
        r = subprocess.run([self.petrel, "sandbox", self.sb, "--port-base", str(PETREL_PORT_BASE)],
                           capture_output=True, timeout=60, check=True)
        m = re.search(r"demo password: (\S+)", r.stdout.decode())
        if not m:
            raise RuntimeError("no demo password in `petrel sandbox` output")
        self.password = m.group(1)
        services = open(os.path.join(self.etc, "services.conf")).read()
        if not re.search(rf"^127\.0\.0\.1:{self.port}\s.*\spop3d\s*$", services, re.M):
            raise RuntimeError(f"no pop3d on 127.0.0.1:{self.port} in {self.etc}/services.conf")
        with open(os.path.join(self.etc, "petrel.conf"), "a") as f:
            f.write("\n# bench/pop3.py: plain POP3 on both sides\npop3d_tls_auth_only = no\n")
        # The POP3S service is left out, as Dovecot's pop3s listener is (port = 0), so that
        # the pop3d processes measured are those of the one service used.
        services = re.sub(rf"^(127\.0\.0\.1:{PETREL_PORT_BASE + 995}\s.*\spop3d\s.*)$", r"# \1", services, flags=re.M)
        with open(os.path.join(self.etc, "services.conf"), "w") as f:
            f.write(services)

    def set_home_mailbox(self, value):
        path = os.path.join(self.etc, "petrel.conf")
        text = open(path).read()
        text, k = re.subn(r"^home_mailbox\s*=.*$", f"home_mailbox = {value}", text, flags=re.M)
        if k != 1:
            raise RuntimeError(f"{path}: {k} home_mailbox lines, expected 1")
        with open(path, "w") as f:
            f.write(text)

    def start(self):
        r = subprocess.run([self.petrel, "-c", self.etc, "start"], capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("petrel start: " + (r.stdout + r.stderr).decode(errors="replace"))
        wait_port(self.port, 15)

    def stop(self):
        pid = bl.read_pid(self.pidfile)
        subprocess.run([self.petrel, "-c", self.etc, "stop"], capture_output=True, timeout=60)
        if pid:
            bl.wait_gone(pid, 30)

    def pids(self):
        """Petrel's pop3d processes: the spawners, login processes and session processes."""
        return tree(bl.read_pid(self.pidfile), top_filter=lambda c: c == "pop3d")

    def log_errors(self):
        try:
            text = open(os.path.join(self.sb, "log/maillog"), errors="replace").read()
        except OSError:
            return []
        return [line for line in text.splitlines()
                if "pop3d" in line and ("warning" in line or "fatal" in line or "error" in line)]


DOVECOT_CONF = """\
# bench/pop3.py: a throwaway Dovecot, never a system service.
base_dir = {w}/run
state_dir = {w}/state
log_path = {w}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {w}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {w}/passwd
}}
mail_location = {location}
protocol pop3 {{
  mail_max_userip_connections = 50
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


class Dovecot(bl.Dovecot):
    package = "dovecot-pop3d"
    program = "/usr/lib/dovecot/pop3"
    port = DOVECOT_POP3
    session_comm = "pop3"

    def __init__(self, work, home, password):
        super().__init__(work)
        self.home = home
        self.password = password
        self.mboxdir = os.path.join(self.w, "mbox")
        self.mbox = os.path.join(self.mboxdir, "inbox")

    def create(self):
        for d in ("run", "state", "mbox/root"):
            os.makedirs(os.path.join(self.w, d))
        with open(os.path.join(self.w, "passwd"), "w") as f:
            f.write(f"demo:{{PLAIN}}{self.password}:{self.uid}:{self.gid}::{self.home}::\n")

    def configure(self, location):
        with open(self.conf, "w") as f:
            f.write(DOVECOT_CONF.format(w=self.w, uid=min(self.uid, 500), location=location, port=self.port))

    def wait_ready(self):
        wait_port(self.port, 15)

    def pids(self):
        """The master and everything under it (pop3-login, pop3, auth, anvil, ...)."""
        return tree(self.master)


HAVE_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def children(pid):
    """pid's children from /proc/PID/task/*/children (cheap enough to call every 50 ms
    while the server works); None when the kernel does not offer that file."""
    if not HAVE_CHILDREN:
        return None
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            pass
    return out


def tree(root, top_filter=None):
    """root's descendants and root (without root and keeping only the children whose
    comm top_filter accepts, when it is given); bl.tree_pids when children() is not
    offered."""
    if not root:
        return []
    first = children(root)
    if first is None:
        pids = bl.tree_pids(root)
        if top_filter:
            pids = [p for p in pids if top_filter(bl.comm(p))]
        return pids
    out = [] if top_filter else [root]
    todo = [p for p in first if not top_filter or top_filter(bl.comm(p))]
    for _ in range(100_000):
        if not todo:
            break
        pid = todo.pop()
        out.append(pid)
        todo.extend(children(pid) or [])
    return out


def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def wait_sessions_gone(s, limit=10):
    """Waits (at most `limit` s) until no session process of s is left running, so one
    session's exit does not overlap the next measurement. A zombie (exited, not reaped
    yet: Petrel's spawner reaps its sessions up to about a second later) counts as gone."""
    end = time.time() + limit
    while time.time() < end:
        if not any(bl.comm(p) == s.session_comm and state(p) not in ("Z", "?") for p in s.pids()):
            return True
        time.sleep(0.02)
    return False


class PeakSampler(threading.Thread):
    """Peak RSS/PSS (KiB) of a server's processes, all of them and the session process
    alone, sampled every `interval` s until `stop` is set (or `limit` s have passed)."""

    def __init__(self, server, interval=0.05, limit=600):
        super().__init__(daemon=True)
        self.s, self.interval, self.limit = server, interval, limit
        self.rss = self.pss = self.sess_rss = self.sess_pss = self.samples = 0
        self.stop = False
        self.lock = threading.Lock()

    def sample(self):
        pids = self.s.pids()
        rss, pss = bl.pids_memory(pids)
        srss, spss = bl.pids_memory([p for p in pids if bl.comm(p) == self.s.session_comm])
        with self.lock:
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            self.sess_rss, self.sess_pss = max(self.sess_rss, srss), max(self.sess_pss, spss)
            self.samples += 1

    def run(self):
        end = time.time() + self.limit
        while not self.stop and time.time() < end:
            self.sample()
            time.sleep(self.interval)


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------


def session(s):
    c = Client(s.port)
    c.login(s.password)
    return c


def t_login_stat(s):
    """(connect+greeting+USER+PASS+STAT seconds, STAT count, [seconds of connect+greeting,
    USER, PASS, STAT])."""
    wait_sessions_gone(s)
    t = [time.perf_counter()]
    c = Client(s.port)
    t.append(time.perf_counter())
    c.cmd("USER demo")
    t.append(time.perf_counter())
    c.cmd(f"PASS {s.password}", secret=True)
    t.append(time.perf_counter())
    count, _ = c.stat()
    t.append(time.perf_counter())
    c.quit()
    return t[-1] - t[0], count, [b - a for a, b in zip(t, t[1:])]


def t_uidl(s):
    """(UIDL seconds, [uidl strings])."""
    wait_sessions_gone(s)
    c = session(s)
    t = time.perf_counter()
    body = c.multi("UIDL")
    el = time.perf_counter() - t
    c.quit()
    uids = [line.split(b" ", 1)[1].decode() for line in body.split(b"\r\n") if line]
    return el, uids


def retr_run(s, n, window, digests, alt=None, sample=True):
    """One RETR-all session: dict with seconds, octets, problems, CPU and peak memory."""
    wait_sessions_gone(s)
    cpu0 = bl.cpu(s.pids())
    sampler = PeakSampler(s) if sample else None
    if sampler:
        sampler.start()
    c = session(s)
    count, size = c.stat()
    el, buf, spans = c.retr_all(count, window, size)
    cpu1 = bl.cpu(s.pids())
    sess_cpu = sum(bl.pid_cpu(p) for p in s.pids() if bl.comm(p) == s.session_comm and state(p) != "Z")
    if sampler:
        sampler.sample()  # once more with the session still open: a short one may fall between samples
    c.quit()
    if sampler:
        sampler.stop = True
        sampler.join(timeout=5)
    octets, problems, quoted = check_retr(buf, spans, digests, alt)
    if count != len(digests):
        problems.insert(0, f"STAT says {count} messages, {len(digests)} expected")
    out = dict(seconds=el, octets=octets, count=len(spans), stat_octets=size, problems=problems,
               quoted=quoted, digests=message_digests(buf, spans), cpu=cpu1 - cpu0, sess_cpu=sess_cpu,
               buf=buf, spans=spans)
    if sampler:
        out.update(rss=sampler.rss, pss=sampler.pss, sess_rss=sampler.sess_rss,
                   sess_pss=sampler.sess_pss, samples=sampler.samples)
    return out


def warm_up(s, n, window, digests, alt=None):
    """USER, PASS, STAT, UIDL, RETR all, QUIT; returns (seconds, problems)."""
    wait_sessions_gone(s)
    t = time.perf_counter()
    c = session(s)
    count, size = c.stat()
    c.multi("UIDL")
    _, buf, spans = c.retr_all(count, window, size)
    c.quit()
    el = time.perf_counter() - t
    _, problems, _ = check_retr(buf, spans, digests, alt)
    return el, problems


def run_case(case, servers, n, window, digests, msgs, deadline, res, status, after_cold=None, alts=None):
    """The warm-ups and the measurements of one case (maildir or mbox) on both servers;
    after_cold() runs after the first warm-ups; alts: {server name: accepted variant
    digests (see check_retr)}. Fills res[case][server name]; returns the updated exit
    status."""
    alts = alts or {}

    def check_time():
        if time.time() > deadline:
            raise OutOfTime(f"--limit reached during the {case} case")

    out = res[case] = {s.name: {"login_stat": [], "uidl": [], "retr": []} for s in servers}
    for s in servers:
        check_time()
        el, problems = warm_up(s, n, window, digests, alts.get(s.name))
        print(f"  {case} warm-up (cold) {s.name}: {el:.2f} s" + (f"; PROBLEMS: {problems}" if problems else ""),
              flush=True)
        status = 1 if problems else status
        out[s.name]["cold_s"] = el
    if after_cold:
        after_cold()
    for s in servers:
        check_time()
        el, problems = warm_up(s, n, window, digests, alts.get(s.name))
        print(f"  {case} warm-up (2nd)  {s.name}: {el:.2f} s" + (f"; PROBLEMS: {problems}" if problems else ""),
              flush=True)
        status = 1 if problems else status
    for r in range(5):
        check_time()
        for s in (servers if r % 2 == 0 else servers[::-1]):
            el, count, phases = t_login_stat(s)
            out[s.name]["login_stat"].append(el)
            out[s.name].setdefault("phases", []).append(phases)
            out[s.name]["stat_count"] = count
    uidls = {}
    for r in range(3):
        check_time()
        for s in (servers if r % 2 == 0 else servers[::-1]):
            el, uids = t_uidl(s)
            out[s.name]["uidl"].append(el)
            uidls[s.name] = uids
    for r in range(3):
        for s in (servers if r % 2 == 0 else servers[::-1]):
            check_time()
            d = retr_run(s, n, window, digests, alts.get(s.name))
            buf, spans = d.pop("buf"), d.pop("spans")
            out[s.name]["digests"] = d.pop("digests")
            d["digest"] = short_digest(out[s.name]["digests"])
            out[s.name]["retr"].append(d)
            if d["problems"]:
                status = 1
                print(f"  {case} {s.name} RETR-all run {r + 1}: PROBLEMS: {d['problems']}")
                alt = alts.get(s.name) or {}
                bad = [k + 1 for k, (_st, a, b) in enumerate(spans)
                       if k < len(digests) and hashlib.sha256(unstuff(bytes(buf[a:b]))).digest()
                       not in (digests[k], alt.get(k))]
                if bad:
                    print(f"    {first_difference(buf, spans, msgs, bad[0])}")
            del buf, spans
    for s in servers:
        o = out[s.name]
        print(f"  {case} {s.name:<8} runs: login+STAT " + " ".join(f"{x * 1000:.1f}" for x in o["login_stat"])
              + " ms; UIDL " + " ".join(f"{x * 1000:.1f}" for x in o["uidl"])
              + " ms; RETR all " + " ".join(f"{d['seconds']:.3f}" for d in o["retr"])
              + " s; CPU " + " ".join(f"{d['cpu']:.2f}" for d in o["retr"])
              + " s; peak RSS " + " ".join(f"{d['rss'] / 1024:.1f}" for d in o["retr"])
              + " MiB", flush=True)
        ph = [bl.median([p[i] for p in o["phases"]]) * 1000 for i in range(4)]
        print(f"    login+STAT phases (medians): connect+greeting {ph[0]:.1f} ms, USER {ph[1]:.1f} ms,"
              f" PASS {ph[2]:.1f} ms, STAT {ph[3]:.1f} ms")
        uids = uidls.get(s.name, [])
        o["uidl_count"] = len(uids)
        last = o["retr"][-1]
        ok = not any(d["problems"] for d in o["retr"])
        quoted = last["quoted"]
        print(f"    checks: STAT {o.get('stat_count')} messages, UIDL {len(uids)} lines ({len(set(uids))} distinct,"
              f" e.g. {uids[0] if uids else '-'}), RETR {last['count']} messages, {last['octets']} octets"
              f" (STAT said {last['stat_octets']}), content digest {last['digest']}; every message's SHA-256"
              f" equal to the written message's: {'yes' if ok and not quoted else 'NO'}"
              + (f", except {len(quoted)} (messages {quoted[:4]}...) sent as stored in the mbox, mboxrd"
                 f" quoting not undone ('>From ' for 'From ', '>>From ' for '>From ')" if ok and quoted else ""))
        if o.get("stat_count") != n or len(set(uids)) != n:
            print(f"    PROBLEM: STAT or UIDL does not list {n} distinct messages")
            status = 1
    names = [s.name for s in servers]
    if len(names) == 2 and all("digests" in out[x] for x in names):
        a, b = (out[x]["digests"] for x in names)
        differ = [k for k in range(max(len(a), len(b))) if k >= len(a) or k >= len(b) or a[k] != b[k]]
        accepted = next((alts[x] for x in names if x in alts), {})
        explained = bool(accepted) and all(k in accepted for k in differ)
        print(f"    message k identical on both servers: {'yes, all ' + str(len(a)) if not differ else 'NO for ' + str(len(differ)) + ' messages'}"
              + (" (only those with quoted 'From ' lines in the mbox: Dovecot sends them quoted)" if differ and explained else ""))
        if differ and not explained:
            status = 1
    if len(names) == 2 and uidls.get(names[0]) is not None:
        u0, u1 = uidls.get(names[0]), uidls.get(names[1])
        same = u0 == u1
        folded = [x.lower() for x in u0] == [x.lower() for x in (u1 or [])]
        print(f"    UIDLs of the two servers identical: {'yes' if same else 'no'} (not required)"
              + (" but identical ignoring case (upper- vs lower-case hex digits)" if folded and not same else ""))
    return status


# ---------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release"))
    ap.add_argument("-n", type=int, default=10000, help="messages in the maildrop")
    ap.add_argument("--window", type=int, default=50, help="RETR commands per pipelined window")
    ap.add_argument("--limit", type=float, default=900, help="seconds for the whole run")
    ap.add_argument("--keep", action="store_true", help="keep the work directory and say where")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    a = ap.parse_args()
    if a.n < 1 or a.window < 1:
        raise SystemExit("pop3 bench: -n and --window must be positive")
    deadline = time.time() + a.limit
    bindir = os.path.abspath(a.bin)
    for why in (Petrel.why_not(bindir), Dovecot.why_not()):
        if why:
            raise SystemExit(f"pop3 bench: {why}")

    work = tempfile.mkdtemp(prefix="petrel-pop3-bench-")
    os.chmod(work, 0o755)
    petrel = Petrel(bindir, work)
    dove = None
    started = []
    status = 0
    res = {}
    try:
        petrel.create()
        dove = Dovecot(work, petrel.home, petrel.password)
        dove.create()
        t = time.time()
        msgs = make_messages(a.n, 2048, 8192, int(time.time()) - 3600)
        digests = [wire_digest(data) for _t, data in msgs]
        nbytes = write_maildir(os.path.join(petrel.maildir, "cur"), msgs)
        mbox_size = write_mbox(petrel.mbox, msgs)
        shutil.copyfile(petrel.mbox, dove.mbox)
        bl.chown_tree(petrel.home, dove.uid, dove.gid)
        bl.chown_tree(dove.mboxdir, dove.uid, dove.gid)
        # Dovecot's mail user must be able to walk down to the mail.
        for top in (petrel.home, dove.mboxdir):
            d = os.path.dirname(top)
            while d.startswith(work) and len(d) >= len(work):
                os.chmod(d, os.stat(d).st_mode | 0o111)
                d = os.path.dirname(d)
        special = len(range(42, a.n, 100))
        print(f"pop3: {a.n} messages, {nbytes / 1e6:.1f} MB ({nbytes / a.n / 1024:.1f} KiB mean; {special} with"
              f" '.'/'From '/'>From ' lines), Maildir and a {mbox_size / 1e6:.1f} MB mboxrd file written in"
              f" {time.time() - t:.1f} s")
        print(f"  petrel pop3d 127.0.0.1:{petrel.port} ({bindir}); dovecot {bl.dovecot_version()} pop3"
              f" 127.0.0.1:{dove.port}; plain POP3 (USER/PASS), no TLS on either; RETR window {a.window}")
        servers = [dove, petrel]  # Dovecot warms up first (it writes dovecot-uidlist as its user)

        # Maildir.
        print(f"  maildir: both serve {petrel.maildir}", flush=True)
        dove.configure(f"maildir:{petrel.maildir}")
        for s in servers:
            s.start()
            started.append(s)
        # Petrel (root in a sandbox run by root) may leave files Dovecot's user must write.
        status = run_case("maildir", servers, a.n, a.window, digests, msgs, deadline, res, status,
                          after_cold=lambda: bl.chown_tree(petrel.home, dove.uid, dove.gid))

        # mbox.
        print(f"  mbox: petrel {petrel.mbox}, dovecot its copy {dove.mbox}", flush=True)
        for s in servers:
            s.stop()
        petrel.set_home_mailbox("mbox")
        dove.configure(f"mbox:{dove.mboxdir}/root:INBOX={dove.mbox}")
        for s in servers:
            s.start()
        # Dovecot does not undo mboxrd quoting: it sends a quoted line as stored. Accepted
        # for Dovecot (and said so), never for Petrel.
        alt = {}
        for i, (_t, data) in enumerate(msgs):
            stored = FROM_LINE.sub(rb">\1", data)
            if stored != data:
                alt[i] = wire_digest(stored)
        status = run_case("mbox", servers, a.n, a.window, digests, msgs, deadline, res, status,
                          alts={"dovecot": alt})

        # Table.
        rows = []
        for case in ("maildir", "mbox"):
            if case not in res:
                continue
            p, q = res[case]["petrel"], res[case]["dovecot"]
            if not p["retr"] or not q["retr"]:
                continue

            def rate(o):
                return bl.median([d["octets"] / d["seconds"] / 1e6 for d in o["retr"]])

            def peak(o, key):
                return max(d[key] for d in o["retr"]) / 1024

            rows += [
                (f"{case}: connect+USER+PASS+STAT ms (median of 5)", bl.median(p["login_stat"]) * 1000,
                 bl.median(q["login_stat"]) * 1000, "time"),
                (f"{case}: UIDL of {a.n} ms (median of 3)", bl.median(p["uidl"]) * 1000, bl.median(q["uidl"]) * 1000,
                 "time"),
                (f"{case}: RETR all, message MB/s (median of 3)", rate(p), rate(q), "rate"),
                (f"{case}: RETR all, server CPU s (median of 3)", bl.median([d["cpu"] for d in p["retr"]]),
                 bl.median([d["cpu"] for d in q["retr"]]), "time"),
                (f"{case}: RETR all, peak RSS MiB, all server processes", peak(p, "rss"), peak(q, "rss"), "mem"),
                (f"{case}: RETR all, peak PSS MiB, all server processes", peak(p, "pss"), peak(q, "pss"), "mem"),
                (f"{case}: RETR all, peak RSS MiB, session process", peak(p, "sess_rss"), peak(q, "sess_rss"), "mem"),
            ]
        print()
        print(f"  {'figure (warm case; ' + str(a.n) + ' messages)':<58} {'petrel':>10} {'dovecot':>10} {'ratio':>8}")
        losses = []
        table = []
        for label, pv, qv, kind in rows:
            if kind == "rate":
                ratio, how = (pv / qv if qv else float("inf")), "petrel/dovecot"
            else:
                ratio, how = (qv / pv if pv else float("inf")), "dovecot/petrel"
            rtext = f"{ratio:7.2f}x" if pv and qv else "      - "
            print(f"  {label:<58} {pv:10.{bl.prec(pv)}f} {qv:10.{bl.prec(qv)}f} {rtext}  ({how})")
            table.append(dict(figure=label, petrel=pv, dovecot=qv, ratio=ratio, ratio_is=how))
            if pv and qv and ratio < 1:
                losses.append(f"{label} {ratio:.2f}x")
        print("  ratio > 1 means Petrel is better on every row: rates are petrel/dovecot; times, CPU and memory"
              " dovecot/petrel.")
        print(f"  memory: Dovecot = every process under its master; Petrel = its pop3d processes (spawner,"
              f" pop3d-login, pop3d-session); session process = Dovecot `pop3`, Petrel `pop3d-session`;"
              f" sampled every 50 ms, peak of 3 runs.")
        print(f"  dovecot {bl.dovecot_version()}")
        errs = dove.log_errors()
        if errs:
            print(f"  dovecot log: {len(errs)} error/warning lines, first: {errs[:3]}")
        perrs = petrel.log_errors()
        if perrs:
            print(f"  petrel log: {len(perrs)} pop3d warning/error lines, first: {perrs[:3]}")
        summary = " ".join(
            f"{case}_retr_MBps={r['petrel']:.1f}/{r['dovecot']:.1f}"
            for case in ("maildir", "mbox")
            for r in [next((x for x in table if x['figure'].startswith(f'{case}: RETR all, message')), None)]
            if r)
        print(f"pop3 summary (petrel/dovecot): {summary}; {'Petrel below Dovecot on: ' + '; '.join(losses) if losses else 'Petrel >= Dovecot on every figure'};"
              f" correctness {'OK' if status == 0 else 'FAILED'}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(dict(n=a.n, window=a.window, dovecot=bl.dovecot_version(), table=table,
                               runs={case: {name: {k: v for k, v in o.items() if k != "digests"} for name, o in r.items()}
                                     for case, r in res.items()},
                               ok=status == 0), f, indent=1)
    except Exception as e:  # noqa: BLE001 (reported, exit status 1)
        print(f"pop3 bench FAILED: {type(e).__name__}: {e}")
        if dove:
            print(f"  dovecot log: {dove.log_errors()[:5]}")
        print(f"  petrel log: {petrel.log_errors()[:5]}")
        status = 1
    finally:
        for s in started:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001
                print(f"  ({s.name} stop: {e})", file=sys.stderr)
        if a.keep:
            print(f"  kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
