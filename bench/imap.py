#!/usr/bin/env python3
"""IMAP benchmark: Petrel's imapd and Dovecot side by side on the same Maildir, same run.

    python3 bench/imap.py --bin target/release [-n 10000] [--conns 1000] [--big 100000]
                          [--limit 1500] [--keep] [--petrel-conns 10000]

Set-up:
  - a Petrel sandbox (`petrel sandbox DIR --port-base 15000`, IMAP on 127.0.0.1:15143)
    with `imapd_tls_auth_only = no`, so LOGIN works on plain IMAP;
  - Dovecot (Debian's dovecot-imapd) from a throwaway config in the same temporary
    directory: `dovecot -c CONF`, base_dir/state_dir/log there, listen = 127.0.0.1, IMAP on
    127.0.0.1:15500, ssl = no, disable_plaintext_auth = no, a passwd-file with demo and the
    sandbox's password, mail_location = maildir:<the sandbox's home/demo/Maildir>. Dovecot
    refuses mail access as uid 0, so when this runs as root Dovecot's demo is the `mail`
    user and the Maildir is chowned to it (Petrel, as root, reads it all the same; the
    tree is chowned again after Petrel has written to it). Limits raised for the idle
    test: mail_max_userip_connections, process_limit of imap and imap-login, and
    default_client_limit. Dovecot is stopped at the end (doveadm stop, then its master pid
    is killed if still there); it never runs as a system service.
  - INBOX: -n messages (2-8 KiB, a few headers, words from a small vocabulary; the word
    WORD in 1 % of them) written straight into Maildir/cur with Dovecot-style names
    (`T.MiPpid.bench,S=size,W=vsize:2,FLAGS`, mtime = the INTERNALDATE) before either
    server touches it.

Procedure: each server first gets a warm-up pass (LOGIN, SELECT, the UID FETCH, the
BODY.PEEK[] FETCH, the SEARCH, LOGOUT), so that it builds its index/cache and the files
are in the page cache; all figures are the WARM case. Then, alternating the servers:
  login+select  connect, greeting, LOGIN, SELECT INBOX (median of 5 fresh connections);
  uid fetch     `UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)` (median of 3);
  body MB/s     `FETCH 1:* BODY.PEEK[]`, message bytes / time (median of 3);
  search        `SEARCH TEXT "WORD"` (median of 3);
  idle conns    --conns connections (opened 8 at a time for at most 240 s per server;
                how many were opened is printed), each LOGIN + SELECT INBOX + IDLE; PSS
                and RSS of the server (Dovecot: every process under its master; Petrel: its imapd
                processes — spawners, login processes, session workers); both servers
                are restarted first, so Petrel's figure includes its whole session worker before and after, difference / connections; and the CPU the
                server used over 5 s while they all idle;
  many idle     (with --petrel-conns N) Petrel alone holds N LOGIN+SELECT+IDLE connections
                (16 opened at a time): how many opened and stayed open, PSS per connection,
                CPU while they idle;
  big select    (with --big N, when time is left) a folder `.Big` of N smaller messages
                (2-3 KiB), warm-up SELECT once, then the SELECT time (median of 3).
The client is a raw-socket one (literals skipped by length), the same for both servers.

Every loop is bounded (counts and the --limit deadline); every connection is to
127.0.0.1.
"""
import argparse
import email.utils
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

PETREL_PORT_BASE = 15000
PETREL_IMAP = PETREL_PORT_BASE + 143
DOVECOT_IMAP = 15500
WORD = "quetzalcoatl"
VOCAB = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu the of and "
         "to in is that for on with as was at by an be this which from or have not are but all "
         "meeting report budget quarter schedule review project update team plan release").split()
NL = b"\n"
LITERAL = re.compile(rb"\{(\d+)\+?\}$")


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
    special = i % 100 == 42  # 1 % of the messages carry WORD
    while size < target:
        words, n = [], 0
        while n < 68:
            w = rnd.choice(VOCAB)
            words.append(w)
            n += len(w) + 1
        if special and len(lines) == 3:
            words[2] = WORD
        line = " ".join(words) + "\n"
        lines.append(line)
        size += len(line)
    return (head + "".join(lines)).encode()


def write_folder(cur, n, lo, hi, t_end):
    """n messages into `cur` with Dovecot-style names; returns total bytes."""
    os.makedirs(cur, exist_ok=True)
    total = 0
    pid = os.getpid()
    for i in range(n):
        t = t_end - (n - i) * 60
        data = make_message(i, t, lo, hi)
        flags = "FS" if i % 10 == 0 else ("S" if i % 3 else "")
        vsize = len(data) + data.count(NL)
        name = f"{t}.M{i % 1000000}P{pid}Q{i}.bench,S={len(data)},W={vsize}:2,{flags}"
        path = os.path.join(cur, name)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (t, t))
        total += len(data)
    return total


# ---------------------------------------------------------------------------------------
# A raw IMAP client
# ---------------------------------------------------------------------------------------


class Client:
    def __init__(self, port, timeout=120):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()
        self.pos = 0
        self.n = 0
        self.greeting = self._line()

    def _fill(self):
        if self.pos > 1 << 20:
            del self.buf[:self.pos]
            self.pos = 0
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def _line(self):
        """One line (without CRLF); a line with literals comes back with the literal
        bytes skipped and their total length counted in self.lit."""
        parts, self.lit = [], 0
        for _ in range(10_000_000):
            eol = self.buf.find(b"\r\n", self.pos)
            while eol < 0:
                self._fill()
                eol = self.buf.find(b"\r\n", self.pos)
            seg = bytes(self.buf[self.pos:eol])
            self.pos = eol + 2
            m = LITERAL.search(seg)
            if not m:
                parts.append(seg)
                return b"".join(parts)
            parts.append(seg)
            size = int(m.group(1))
            self.lit += size
            while len(self.buf) - self.pos < size:
                self._fill()
            self.pos += size
        raise RuntimeError("response line too long")

    def send(self, text):
        self.n += 1
        tag = f"t{self.n}"
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        return tag

    def cmd(self, text, keep=None):
        """Sends a command, reads to its tagged reply. Returns (tagged line, number of
        untagged lines, literal bytes, lines starting with `keep`)."""
        tag = self.send(text).encode() + b" "
        untagged, lit, kept = 0, 0, []
        for _ in range(100_000_000):
            line = self._line()
            lit += self.lit
            if line.startswith(tag):
                if not line[len(tag):].startswith(b"OK"):
                    raise RuntimeError(f"{text.split()[0]}: {line.decode(errors='replace')[:200]}")
                return line, untagged, lit, kept
            untagged += 1
            if keep and line.startswith(keep):
                kept.append(line)
        raise RuntimeError("too many response lines")

    def idle(self):
        tag = self.send("IDLE")
        line = self._line()
        if not line.startswith(b"+"):
            raise RuntimeError(f"IDLE: {line[:200]!r}")
        return tag

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def login_select(port, password, mailbox="INBOX"):
    c = Client(port)
    c.cmd(f'LOGIN demo "{password}"')
    c.cmd(f"SELECT {mailbox}")
    return c


# ---------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------


def wait_port(port, limit):
    bl.wait_greeting(port, limit, b"* OK", b"a LOGOUT\r\n", "IMAP")


class Petrel:
    name = "petrel"
    port = PETREL_IMAP

    def __init__(self, bindir, work):
        self.petrel = os.path.join(bindir, "petrel")
        self.sb = os.path.join(work, "sb")
        self.etc = os.path.join(self.sb, "etc")
        self.pidfile = os.path.join(self.sb, "spool/pid/master.pid")
        self.maildir = os.path.join(self.sb, "home/demo/Maildir")

    @staticmethod
    def why_not(bindir):
        for p in ("petrel", "master", "imapd", "authd"):
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
        if f"127.0.0.1:{self.port}" not in services:
            raise RuntimeError(f"no imapd on 127.0.0.1:{self.port} in {self.etc}/services.conf")
        with open(os.path.join(self.etc, "petrel.conf"), "a") as f:
            f.write("\n# bench/imap.py: plain IMAP on both sides\nimapd_tls_auth_only = no\n")

    def start(self):
        r = subprocess.run([self.petrel, "-c", self.etc, "start"], capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("petrel start: " + (r.stdout + r.stderr).decode(errors="replace"))
        wait_port(self.port, 15)

    def stop(self):
        pid = bl.read_pid(self.pidfile)
        subprocess.run([self.petrel, "-c", self.etc, "stop"], capture_output=True, timeout=60)
        bl.wait_gone(pid, 30)

    def pids(self):
        """Petrel's imapd processes: the spawners, login processes and session workers."""
        root = bl.read_pid(self.pidfile)
        return [p for p in bl.tree_pids(root) if bl.comm(p).startswith("imapd")] if root else []


DOVECOT_CONF = """\
# bench/imap.py: a throwaway Dovecot, never a system service.
base_dir = {w}/run
state_dir = {w}/state
log_path = {w}/dovecot.log
protocols = imap
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
mail_location = maildir:{maildir}
default_client_limit = {clients}
default_process_limit = {procs}
protocol imap {{
  mail_max_userip_connections = {clients}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_limit = {procs}
}}
service imap {{
  process_limit = {procs}
}}
"""


class Dovecot(bl.Dovecot):
    package = "dovecot-imapd"
    program = "/usr/lib/dovecot/imap"
    port = DOVECOT_IMAP

    def __init__(self, work, maildir, password, conns):
        super().__init__(work)
        self.maildir = maildir
        self.password = password
        self.conns = conns

    def create(self):
        for d in ("run", "state"):
            os.makedirs(os.path.join(self.w, d))
        home = os.path.dirname(self.maildir)
        with open(os.path.join(self.w, "passwd"), "w") as f:
            f.write(f"demo:{{PLAIN}}{self.password}:{self.uid}:{self.gid}::{home}::\n")
        procs = self.conns + 200
        with open(self.conf, "w") as f:
            f.write(DOVECOT_CONF.format(w=self.w, uid=min(self.uid, 500), maildir=self.maildir,
                                        port=self.port, clients=self.conns * 2 + 1000, procs=procs))

    def wait_ready(self):
        wait_port(self.port, 15)

    def pids(self):
        """The master and everything under it (imap-login, imap, auth, anvil, ...)."""
        return bl.tree_pids(self.master) if self.master else []


def memory(pids):
    """(RSS KiB, PSS KiB) summed over pids."""
    return bl.pids_memory(pids)


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------

FETCH_ENV = "UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)"
FETCH_BODY = "FETCH 1:* BODY.PEEK[]"
SEARCH = f'SEARCH TEXT "{WORD}"'


def t_login_select(s, mailbox="INBOX"):
    """(connect+greeting+LOGIN+SELECT seconds, EXISTS, the SELECT's own seconds)."""
    t = time.perf_counter()
    c = Client(s.port)
    c.cmd(f'LOGIN demo "{s.password}"')
    t1 = time.perf_counter()
    _, _, _, kept = c.cmd(f"SELECT {mailbox}", keep=b"* ")
    t2 = time.perf_counter()
    exists = next((int(k.split()[1]) for k in kept if k.endswith(b" EXISTS")), -1)
    c.cmd("LOGOUT")
    c.close()
    return t2 - t, exists, t2 - t1


def t_command(s, command, keep=None):
    c = login_select(s.port, s.password)
    t = time.perf_counter()
    _, untagged, lit, kept = c.cmd(command, keep=keep)
    el = time.perf_counter() - t
    c.cmd("LOGOUT")
    c.close()
    return el, untagged, lit, kept


def warm_up(s):
    t = time.perf_counter()
    c = login_select(s.port, s.password)
    c.cmd(FETCH_ENV)
    c.cmd(FETCH_BODY)
    c.cmd(SEARCH)
    c.cmd("LOGOUT")
    c.close()
    return time.perf_counter() - t


def idle_test(s, n, limit, conc=8):
    """Opens n LOGIN+SELECT+IDLE connections (conc at a time, at most `limit` s); returns a
    dict with memory before/after, the count opened and errors."""
    time.sleep(1.0)  # let processes of earlier sessions exit
    before = memory(s.pids())
    conns = []
    lock = threading.Lock()

    def one(_i):
        c = login_select(s.port, s.password)
        c.idle()
        with lock:
            conns.append(c)

    t = time.time()
    _, errors = bl.run_parallel(n, conc, limit, one)
    open_s = time.time() - t
    time.sleep(2.0)  # settle
    pids = s.pids()
    c0 = bl.cpu(pids)
    time.sleep(5.0)
    idle_cpu = (bl.cpu(s.pids()) - c0) / 5.0
    after = memory(s.pids())
    nproc = len(s.pids())
    alive = 0
    for c in conns:  # the connections must still be there
        try:
            c.sock.setblocking(False)
            try:
                alive += 0 if c.sock.recv(1, socket.MSG_PEEK) == b"" else 1
            except BlockingIOError:
                alive += 1
        except OSError:
            pass
    for c in conns:
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(5)
            c.sock.sendall(b"DONE\r\nz LOGOUT\r\n")
        except OSError:
            pass
        c.close()
    return dict(before=before, after=after, opened=len(conns), alive=alive, errors=errors,
                open_s=open_s, idle_cpu=idle_cpu, nproc=nproc)


# ---------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release"))
    ap.add_argument("-n", type=int, default=10000, help="messages in INBOX")
    ap.add_argument("--conns", type=int, default=1000, help="idle connections per server")
    ap.add_argument("--big", type=int, default=100000, help="messages in the big folder (0: skip)")
    ap.add_argument("--limit", type=float, default=1500, help="seconds for the whole run")
    ap.add_argument("--keep", action="store_true", help="keep the work directory and say where")
    ap.add_argument("--petrel-conns", type=int, default=0,
                    help="then hold this many IDLE connections on Petrel alone (e.g. 10000)")
    a = ap.parse_args()
    deadline = time.time() + a.limit
    bindir = os.path.abspath(a.bin)
    for why in (Petrel.why_not(bindir), Dovecot.why_not()):
        if why:
            raise SystemExit(f"imap bench: {why}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = max(a.conns, a.petrel_conns)
    want = min(hard, max(soft, most * 2 + 256)) if hard != resource.RLIM_INFINITY else most * 2 + 256
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < a.conns + 64:
        print(f"fd limit {want}: fewer idle connections")
        a.conns = max(10, want - 64)

    work = tempfile.mkdtemp(prefix="petrel-imap-bench-")
    os.chmod(work, 0o755)
    petrel = Petrel(bindir, work)
    dove = None
    started = []
    status = 0
    try:
        petrel.create()
        maildir = petrel.maildir
        dove = Dovecot(work, maildir, petrel.password, a.conns)
        dove.create()
        t = time.time()
        nbytes = write_folder(os.path.join(maildir, "cur"), a.n, 2048, 8192, int(time.time()) - 3600)
        bl.chown_tree(os.path.dirname(maildir), dove.uid, dove.gid)
        # Dovecot's mail user must be able to walk down to the Maildir.
        d = os.path.dirname(os.path.dirname(maildir))
        while d.startswith(work) and len(d) >= len(work):
            os.chmod(d, os.stat(d).st_mode | 0o111)
            d = os.path.dirname(d)
        print(f"imap: INBOX of {a.n} messages, {nbytes / 1e6:.1f} MB ({nbytes / a.n / 1024:.1f} KiB mean),"
              f" written in {time.time() - t:.1f} s; WORD {WORD!r} in {len(range(42, a.n, 100))} messages")
        print(f"  petrel imapd 127.0.0.1:{petrel.port} ({bindir}); dovecot {bl.dovecot_version()} 127.0.0.1:{dove.port};"
              f" same Maildir {maildir}; plain IMAP, no TLS on either")
        servers = [petrel, dove]
        for s in servers:
            s.start()
            started.append(s)
        # Warm-up: Dovecot first (writes dovecot-uidlist as its mail user), then Petrel;
        # the tree is chowned back to Dovecot's user, then both once more.
        for s in (dove, petrel):
            print(f"  warm-up (cold) {s.name}: {warm_up(s):.2f} s", flush=True)
        bl.chown_tree(os.path.dirname(maildir), dove.uid, dove.gid)
        for s in (dove, petrel):
            print(f"  warm-up (2nd)  {s.name}: {warm_up(s):.2f} s", flush=True)

        res = {s.name: {} for s in servers}
        checks = {s.name: {} for s in servers}
        for r in range(5):
            for s in (servers if r % 2 == 0 else servers[::-1]):
                el, exists, sel = t_login_select(s)
                res[s.name].setdefault("login_select", []).append(el)
                res[s.name].setdefault("select", []).append(sel)
                checks[s.name]["exists"] = exists
        for r in range(3):
            for s in (servers if r % 2 == 0 else servers[::-1]):
                el, untagged, _, _ = t_command(s, FETCH_ENV)
                res[s.name].setdefault("uid_fetch", []).append(el)
                checks[s.name]["fetch lines"] = untagged
                el, _, lit, _ = t_command(s, FETCH_BODY)
                res[s.name].setdefault("body", []).append(el)
                res[s.name]["body_bytes"] = lit
                el, _, _, kept = t_command(s, SEARCH, keep=b"* SEARCH")
                res[s.name].setdefault("search", []).append(el)
                checks[s.name]["search hits"] = sum(len(k.split()) - 2 for k in kept)
        for s in servers:
            r = res[s.name]
            print(f"  {s.name:<8} runs: login+select " + " ".join(f"{x * 1000:.1f}" for x in r["login_select"])
                  + " ms (of which SELECT " + " ".join(f"{x * 1000:.1f}" for x in r["select"])
                  + " ms); uid fetch " + " ".join(f"{x:.3f}" for x in r["uid_fetch"])
                  + " s; body " + " ".join(f"{x:.3f}" for x in r["body"])
                  + " s; search " + " ".join(f"{x:.3f}" for x in r["search"]) + " s"
                  f"; checks {checks[s.name]}, body bytes {r['body_bytes']}", flush=True)

        bl.chown_tree(os.path.dirname(maildir), dove.uid, dove.gid)
        # Both servers restart before the idle test, so that "after - before" counts every
        # byte the connections cost: for Petrel that includes the whole session worker
        # (started by the first login) and its copy of the folder, not memory its heap
        # kept from the FETCH runs above.
        for s in servers:
            s.stop()
            s.start()
        idle = {}
        for s in servers:
            left = deadline - time.time() - 60
            if left < 30:
                print(f"  idle test {s.name}: not run (--limit used up)")
                continue
            idle[s.name] = d = idle_test(s, a.conns, min(240, left))
            per = (d["after"][1] - d["before"][1]) / max(d["opened"], 1)
            print(f"  idle test {s.name}: opened {d['opened']}/{a.conns} in {d['open_s']:.1f} s, {d['alive']} still open"
                  f" after 7 s, {d['nproc']} processes; PSS {d['before'][1] / 1024:.1f} → {d['after'][1] / 1024:.1f} MiB"
                  f" ({per:.1f} KiB/conn), RSS {d['before'][0] / 1024:.1f} → {d['after'][0] / 1024:.1f} MiB;"
                  f" CPU while idle {d['idle_cpu'] * 100:.1f} %", flush=True)
            if d["errors"]:
                print(f"    {len(d['errors'])} errors, first: {d['errors'][:3]}")
                status = 1
            time.sleep(2.0)

        big = {}
        if a.big > 0:
            est = a.big * 0.004 + 120  # generation + two warm-ups, roughly
            if deadline - time.time() < est:
                print(f"  big folder: skipped (about {est:.0f} s needed, {deadline - time.time():.0f} s left)")
            else:
                bdir = os.path.join(maildir, ".Big")
                t = time.time()
                bbytes = write_folder(os.path.join(bdir, "cur"), a.big, 2048, 3072, int(time.time()) - 3600)
                for sub in ("new", "tmp"):
                    os.makedirs(os.path.join(bdir, sub), exist_ok=True)
                open(os.path.join(bdir, "maildirfolder"), "w").close()
                bl.chown_tree(bdir, dove.uid, dove.gid)
                print(f"  big folder .Big: {a.big} messages, {bbytes / 1e6:.0f} MB, written in {time.time() - t:.1f} s",
                      flush=True)
                for s in (dove, petrel):
                    el, exists, _ = t_login_select(s, "Big")
                    print(f"  big warm-up SELECT {s.name}: {el:.2f} s (EXISTS {exists})", flush=True)
                bl.chown_tree(bdir, dove.uid, dove.gid)
                for r in range(3):
                    for s in (servers if r % 2 == 0 else servers[::-1]):
                        el, exists, _ = t_login_select(s, "Big")
                        big.setdefault(s.name, []).append(el)
                for s in servers:
                    print(f"  big {s.name} runs: " + " ".join(f"{x * 1000:.1f}" for x in big[s.name]) + " ms")
        else:
            print("  big folder: skipped (--big 0)")

        if a.petrel_conns > 0:
            left = deadline - time.time() - 60
            if left < 60:
                print(f"  many-IDLE test: not run (--limit used up)")
            else:
                d = idle_test(petrel, min(a.petrel_conns, want - 64), min(900, left), conc=16)
                per = (d["after"][1] - d["before"][1]) / max(d["opened"], 1)
                print(f"  many-IDLE test petrel: opened {d['opened']}/{a.petrel_conns} in {d['open_s']:.1f} s,"
                      f" {d['alive']} still open after 7 s; PSS {per:.1f} KiB/conn; {d['nproc']} processes;"
                      f" CPU while idle {d['idle_cpu'] * 100:.1f} %", flush=True)
                if d["errors"]:
                    print(f"    {len(d['errors'])} errors, first: {d['errors'][:3]}")
                    status = 1

        # Table.
        p, q = res["petrel"], res["dovecot"]
        rows = [
            ("LOGIN+SELECT ms (median of 5)", bl.median(p["login_select"]) * 1000, bl.median(q["login_select"]) * 1000, "time"),
            ("UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE) ms", bl.median(p["uid_fetch"]) * 1000,
             bl.median(q["uid_fetch"]) * 1000, "time"),
            ("FETCH 1:* BODY.PEEK[] MB/s", p["body_bytes"] / bl.median(p["body"]) / 1e6,
             q["body_bytes"] / bl.median(q["body"]) / 1e6, "rate"),
            (f'SEARCH TEXT "{WORD}" ms', bl.median(p["search"]) * 1000, bl.median(q["search"]) * 1000, "time"),
        ]
        if "petrel" in idle and "dovecot" in idle:
            for key, label in ((1, "PSS"), (0, "RSS")):
                vals = [(idle[n]["after"][key] - idle[n]["before"][key]) / max(idle[n]["opened"], 1)
                        for n in ("petrel", "dovecot")]
                rows.append((f"{label} KiB per idle connection ({idle['petrel']['opened']}/{idle['dovecot']['opened']} conns)",
                             vals[0], vals[1], "mem"))
            rows.append(("CPU % while all connections idle", idle["petrel"]["idle_cpu"] * 100,
                         idle["dovecot"]["idle_cpu"] * 100, "mem"))
        if big:
            rows.append((f"LOGIN+SELECT ms, {a.big}-message folder (median of 3)", bl.median(big["petrel"]) * 1000,
                         bl.median(big["dovecot"]) * 1000, "time"))
        print()
        print(f"  {'figure (warm case)':<62} {'petrel':>10} {'dovecot':>10} {'ratio':>8}")
        for label, pv, qv, kind in rows:
            if kind == "rate":
                ratio, how = pv / qv if qv else float("inf"), "petrel/dovecot"
            else:
                ratio, how = qv / pv if pv else float("inf"), "dovecot/petrel"
            rtext = f"{ratio:7.2f}x" if pv and qv else "      - "
            print(f"  {label:<62} {pv:10.{bl.prec(pv)}f} {qv:10.{bl.prec(qv)}f} {rtext}  ({how})")
        print("  ratio > 1 means Petrel is better on every row: rates are petrel/dovecot, times, memory"
              " and CPU dovecot/petrel.")
        print("  memory: Dovecot = every process under its master (master, imap-login, imap, auth, ...);"
              " Petrel = its imapd process(es); (after - before) / connections.")
        errs = dove.log_errors()
        if errs:
            print(f"  dovecot log: {len(errs)} error/warning lines, first: {errs[:3]}")
    except Exception as e:  # noqa: BLE001 (reported, exit status 1)
        print(f"imap bench FAILED: {type(e).__name__}: {e}")
        if dove:
            print(f"  dovecot log: {dove.log_errors()[:5]}")
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
