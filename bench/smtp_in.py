#!/usr/bin/env python3
"""Inbound SMTP benchmark: Postfix's smtp-source → smtpd → cleanup → qmgr → local → Maildir,
for Petrel and Postfix side by side, at several client concurrencies.

    python3 bench/smtp_in.py --bin target/release [-n 5000] [-c 1,10,50]
                             [--latency-n 1000] [--latency-c 10] [--no-postfix]

Per concurrency and server, on a fresh suite each time:
  accepted/s    n / wall time of smtp-source (the last 250 to the final dot);
  end-to-end/s  n / time until all n messages are files in the recipient's Maildir;
  peak RSS      of the whole suite (master and every descendant), summed VmRSS sampled
                every 50 ms (local_submit.py's sampler; shared pages count once per process,
                which inflates many-process suites), and peak PSS (proportional set size
                from /proc/PID/smaps_rollup: shared pages divided among their sharers);
  CPU s         user + system seconds of the whole suite during the run: the difference
                between two readings (before the run; after the last delivery) of
                utime+stime+cutime+cstime of master plus utime+stime+cutime+cstime of each
                living descendant (from /proc/PID/stat). A process that exited was reaped
                by its parent, so its time sits in the parent's cutime/cstime and is counted
                once; nothing is lost between samples. smtp-source's own CPU is not counted.
Then the latency of the DATA reply (final "." sent → 250 read), p50/p99, from a Python
client with --latency-c threads, one connection each (TCP_NODELAY; MAIL/RCPT/DATA
pipelined, the body, then the timed ".\r\n"), --latency-n messages in all.

Petrel runs in a sandbox (release binaries from --bin, which must hold smtpd); Postfix
(Debian's package, as root only) from a throwaway config and queue directory with one
smtpd on 127.0.0.1:18525, mynetworks 127.0.0.0/8, home_mailbox Maildir/ for a throwaway
system user. Both: no reverse DNS for the client, no per-client connection limit (the
benchmark is one client address opening many connections).

Every loop is bounded in count and time; every connection is to 127.0.0.1.
"""
import argparse
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402  (process-tree CPU and memory)
import local_submit as ls  # noqa: E402  (the shared helpers: RSS sampler, Maildir count)

PETREL_PORT_BASE = 18000  # smtpd on 127.0.0.1:18025 (below the ephemeral ports)
POSTFIX_PORT = 18525
PAYLOAD = 4096  # bytes of body per message (smtp-source -l; the Python client the same)
SMTP_SOURCE = "/usr/sbin/smtp-source"


tree_cpu = bl.tree_cpu


def pss_of_tree(root_pid):
    """Sum of Pss (KiB) of root_pid and all its descendants."""
    return bl.tree_memory(root_pid)[1]


class PssSampler(threading.Thread):
    def __init__(self, pid_fn):
        super().__init__(daemon=True)
        self.pid_fn, self.peak, self.stop = pid_fn, 0, False

    def run(self):
        while not self.stop:
            pid = self.pid_fn()
            if pid:
                self.peak = max(self.peak, pss_of_tree(pid))
            time.sleep(0.1)


def body_bytes(i):
    lines, size, n = [], 0, 0
    while size < PAYLOAD:
        line = b"%d" % n + b"X" * 76 + b"\r\n"
        lines.append(line)
        size += len(line)
        n += 1
    return (b"Subject: latency %d\r\nX-Seq: %d\r\n\r\n" % (i, i)) + b"".join(lines)


# ---------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------


class Petrel:
    name = "petrel"

    def __init__(self, bindir):
        self.bindir = bindir
        self.petrel = os.path.join(bindir, "petrel")
        self.port = PETREL_PORT_BASE + 25
        self.work = None

    def start(self):
        self.work = tempfile.mkdtemp(prefix="petrel-smtp-bench-")
        sb = os.path.join(self.work, "sb")
        subprocess.run([self.petrel, "sandbox", sb, "--port-base", str(PETREL_PORT_BASE)],
                       check=True, capture_output=True, timeout=60)
        self.etc = os.path.join(sb, "etc")
        with open(os.path.join(self.etc, "petrel.conf"), "a") as f:
            f.write("smtpd_client_connection_count_limit = 0\n")
        services = open(os.path.join(self.etc, "services.conf")).read()
        if f"127.0.0.1:{self.port}" not in services:
            raise SystemExit(f"no smtpd listener in {self.etc}/services.conf: is smtpd in {self.bindir}?")
        subprocess.run([self.petrel, "-c", self.etc, "start"], check=True, capture_output=True, timeout=60)
        self.pidfile = os.path.join(sb, "spool/pid/master.pid")
        self.maildir = os.path.join(sb, "home/demo/Maildir")
        self.rcpt = "demo@localhost"
        wait_greeting(self.port, 30)

    def master_pid(self):
        try:
            return int(open(self.pidfile).read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        subprocess.run([self.petrel, "-c", self.etc, "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.work, ignore_errors=True)


POSTFIX_EXTRA = """\
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 200
"""


class Postfix:
    name = "postfix"
    user = "pfbench"

    def __init__(self):
        self.port = POSTFIX_PORT
        self.work = None

    @staticmethod
    def why_not():
        if os.geteuid() != 0:
            return "needs root (a throwaway system user, mail_owner postfix)"
        if not os.path.exists("/usr/sbin/postfix"):
            return "Debian's postfix package is not installed"
        try:
            pwd.getpwnam("postfix")
        except KeyError:
            return "no postfix system user"
        return None

    def start(self):
        self.work = tempfile.mkdtemp(prefix="postfix-smtp-bench-")
        os.chmod(self.work, 0o755)
        etc, q, d = (os.path.join(self.work, x) for x in ("etc", "spool", "data"))
        for p in (etc, q, d):
            os.makedirs(p)
        home = os.path.join(self.work, "home")
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            subprocess.run(["useradd", "-M", "-d", home, self.user], check=True, timeout=60)
        subprocess.run(["usermod", "-d", home, self.user], check=True, timeout=60)
        os.makedirs(home)
        pw = pwd.getpwnam(self.user)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        with open(os.path.join(etc, "main.cf"), "w") as f:
            f.write(ls.POSTFIX_MAIN.format(q=q, d=d, w=self.work).replace("inet_interfaces = loopback-only\n", ""))
            f.write(POSTFIX_EXTRA)
        master_cf = open("/etc/postfix/master.cf").read() if os.path.exists("/etc/postfix/master.cf") else ""
        lines = []
        for line in master_cf.splitlines():
            parts = line.split()
            if len(parts) > 1 and not line.startswith((" ", "\t", "#")) and parts[1] == "inet":
                line = "#" + line
            lines.append(line)
        # One smtpd on a loopback port, not chrooted (the throwaway queue has no chroot files).
        lines.append(f"127.0.0.1:{self.port} inet n - n - - smtpd")
        with open(os.path.join(etc, "master.cf"), "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chown(d, pwd.getpwnam("postfix").pw_uid, 0)
        self.env = dict(os.environ, MAIL_CONFIG=etc)
        self.etc = etc
        subprocess.run(["postfix", "-c", etc, "check"], capture_output=True, env=self.env, timeout=60)
        r = subprocess.run(["postfix", "-c", etc, "start"], capture_output=True, env=self.env, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("postfix did not start: " + r.stderr.decode(errors="replace"))
        self.pidfile = os.path.join(q, "pid/master.pid")
        self.maildir = os.path.join(home, "Maildir")
        self.rcpt = f"{self.user}@localhost"
        wait_greeting(self.port, 30)

    def master_pid(self):
        try:
            return int(open(self.pidfile).read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        subprocess.run(["postfix", "-c", self.etc, "stop"], capture_output=True, env=self.env, timeout=60)
        time.sleep(0.5)
        shutil.rmtree(self.work, ignore_errors=True)


def wait_greeting(port, limit):
    end = time.time() + limit
    last = None
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    s.recv(512)
                    return
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"no 220 greeting on 127.0.0.1:{port} after {limit} s ({last})")


# ---------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------


def throughput(suite, n, conc, limit):
    """One smtp-source run on a fresh suite."""
    suite.start()
    try:
        sampler = ls.Sampler(suite.master_pid)
        sampler.start()
        pss = PssSampler(suite.master_pid)
        pss.start()
        cpu0 = tree_cpu(suite.master_pid())
        t0 = time.time()
        p = subprocess.run(
            [SMTP_SOURCE, "-s", str(conc), "-m", str(n), "-l", str(PAYLOAD),
             "-f", "bench@example.net", "-t", suite.rcpt, "-M", "bench.example",
             f"127.0.0.1:{suite.port}"],
            capture_output=True, timeout=limit)
        t_acc = time.time() - t0
        ok = p.returncode == 0 and ls.wait_for(suite.maildir, n, limit)
        t_all = time.time() - t0
        cpu = tree_cpu(suite.master_pid()) - cpu0
        sampler.stop = pss.stop = True
        sampler.join(timeout=5)
        pss.join(timeout=5)
        err = "" if p.returncode == 0 else p.stderr.decode(errors="replace").strip()[-300:]
        return dict(ok=ok, accepted=n / t_acc, e2e=n / t_all, t_acc=t_acc, t_all=t_all,
                    rss=sampler.peak / 1024, pss=pss.peak / 1024, cpu=cpu, err=err, got=ls.count(suite.maildir))
    finally:
        suite.stop()


def recv_reply(f):
    lines = []
    for _ in range(100):
        line = f.readline()
        if not line:
            raise ConnectionError("closed after %r" % lines)
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return lines
    raise ConnectionError("reply too long")


def latency(suite, n, conc, limit):
    """n messages from conc threads (one connection each); seconds from the final dot
    to the 250 for each."""
    suite.start()
    try:
        times, errors = [], []
        lock = threading.Lock()
        deadline = time.time() + limit

        def worker(w):
            try:
                with socket.create_connection(("127.0.0.1", suite.port), timeout=60) as s:
                    # Without this, Nagle holds the small final ".\r\n" until the body is
                    # ACKed, and the server's delayed ACK adds ~40 ms to every sample.
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    f = s.makefile("rb")
                    recv_reply(f)
                    s.sendall(b"EHLO latency.example\r\n")
                    recv_reply(f)
                    for i in range(w, n, conc):
                        if time.time() > deadline:
                            raise TimeoutError("out of time")
                        s.sendall(b"MAIL FROM:<bench@example.net>\r\nRCPT TO:<%s>\r\nDATA\r\n" % suite.rcpt.encode())
                        for _ in range(3):
                            r = recv_reply(f)
                        if not r[-1].startswith(b"354"):
                            raise RuntimeError(r[-1].decode(errors="replace"))
                        s.sendall(body_bytes(i))
                        t0 = time.perf_counter()
                        s.sendall(b".\r\n")
                        r = recv_reply(f)
                        dt = time.perf_counter() - t0
                        if not r[-1].startswith(b"250"):
                            raise RuntimeError(r[-1].decode(errors="replace"))
                        with lock:
                            times.append(dt)
                    s.sendall(b"QUIT\r\n")
                    recv_reply(f)
            except Exception as e:  # noqa: BLE001 (reported below)
                with lock:
                    errors.append(f"worker {w}: {e}")

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(conc)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1, deadline - time.time()) + 5)
        wall = time.time() - t0
        delivered = len(times) == n and ls.wait_for(suite.maildir, n, max(1, deadline - time.time()))
        times.sort()
        pct = (lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000) if times else (lambda q: float("nan"))
        return dict(n=len(times), p50=pct(0.50), p99=pct(0.99), max=pct(1.0), wall=wall,
                    delivered=delivered, errors=errors)
    finally:
        suite.stop()


def fmt_tp(name, r):
    flag = "" if r["ok"] else f"  INCOMPLETE ({r['got']} delivered) {r['err']}"
    return (f"  {name:<8} {r['accepted']:10.1f} {r['e2e']:12.1f} {r['rss']:12.1f} {r['pss']:12.1f} {r['cpu']:8.2f}"
            f"  ({r['t_acc']:.2f} s / {r['t_all']:.2f} s){flag}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000, help="messages per smtp-source run")
    ap.add_argument("-c", default="1,10,50", help="smtp-source session counts (-s), comma-separated")
    ap.add_argument("--latency-n", type=int, default=1000)
    ap.add_argument("--latency-c", type=int, default=10)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release"))
    ap.add_argument("--limit", type=float, default=900, help="seconds allowed for one run")
    ap.add_argument("--no-postfix", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(SMTP_SOURCE):
        raise SystemExit(f"{SMTP_SOURCE} is missing: apt-get install postfix (it ships smtp-source)")
    bindir = os.path.abspath(a.bin)
    if not os.path.exists(os.path.join(bindir, "smtpd")):
        raise SystemExit(f"{bindir}/smtpd is missing: cargo build --release --workspace --bins")
    concs = [int(x) for x in a.c.split(",") if x.strip()]
    suites = [Petrel(bindir)]
    why = "--no-postfix" if a.no_postfix else Postfix.why_not()
    if why is None:
        suites.append(Postfix())
    print(f"smtp in: smtp-source → smtpd → Maildir, {a.n} messages with a {PAYLOAD}-byte body per run")
    if why:
        print(f"postfix: skipped ({why})")
    print(f"  {'':<8} {'accepted/s':>10} {'end-to-end/s':>12} {'peak RSS MiB':>12} {'peak PSS MiB':>12} {'CPU s':>8}")
    results = {}
    for c in concs:
        print(f"concurrency {c}:")
        for s in suites:
            r = throughput(s, a.n, c, a.limit)
            results[(s.name, c)] = r
            print(fmt_tp(s.name, r), flush=True)
        if len(suites) == 2:
            p, q = results[("petrel", c)], results[("postfix", c)]
            print(f"  {'ratio':<8} {p['accepted'] / q['accepted']:9.2f}x {p['e2e'] / q['e2e']:11.2f}x"
                  f" {p['rss'] / max(q['rss'], 0.001):11.2f}x {p['pss'] / max(q['pss'], 0.001):11.2f}x"
                  f" {p['cpu'] / max(q['cpu'], 0.001):7.2f}x"
                  "   (petrel / postfix; >1 = petrel faster for rates, bigger for RSS/CPU)")
    print(f"DATA reply latency (final '.' → 250), {a.latency_n} messages, {a.latency_c} connections:")
    lat = {}
    for s in suites:
        r = latency(s, a.latency_n, a.latency_c, a.limit)
        lat[s.name] = r
        err = f"  ERRORS: {r['errors'][:3]}" if r["errors"] else ""
        print(f"  {s.name:<8} p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  max {r['max']:7.2f} ms"
              f"  ({r['n']} samples, {r['n'] / r['wall']:.1f} msg/s){'' if r['delivered'] else '  NOT ALL DELIVERED'}{err}")
    if len(lat) == 2:
        p, q = lat["petrel"], lat["postfix"]
        print(f"  {'ratio':<8} p50 {p['p50'] / q['p50']:6.2f}x     p99 {p['p99'] / q['p99']:6.2f}x   (petrel / postfix; <1 = petrel faster)")


if __name__ == "__main__":
    main()
