#!/usr/bin/env python3
"""Local submission benchmark: N messages through each suite's own sendmail, time until
all are in the recipient's Maildir, messages/s and peak RSS of the whole suite.

Petrel runs in a sandbox; Postfix (Debian's package, when installed and run as root) runs
from a throwaway config and queue directory of its own, with home_mailbox = Maildir/ for
a throwaway system user, listening on nothing. Both in the same invocation, so the ratio
compares like with like on this machine.

    bench/local_submit.py [-n 2000] [-c 10] [--bin target/release] [--no-postfix]

Every loop is bounded in count and time; nothing leaves 127.0.0.0/8 (nothing listens).
"""
import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time

MESSAGE = b"Subject: bench %d\nX-Seq: %d\n\n" + (b"x" * 76 + b"\n") * 50


def rss_of_tree(root_pid):
    """Sum of VmRSS (KiB) of root_pid and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Sampler(threading.Thread):
    def __init__(self, pid_fn):
        super().__init__(daemon=True)
        self.pid_fn, self.peak, self.stop = pid_fn, 0, False

    def run(self):
        while not self.stop:
            pid = self.pid_fn()
            if pid:
                self.peak = max(self.peak, rss_of_tree(pid))
            time.sleep(0.05)


def count(maildir):
    n = 0
    for sub in ("new", "cur"):
        try:
            n += len(os.listdir(os.path.join(maildir, sub)))
        except OSError:
            pass
    return n


def submit_all(cmd, n, conc, env=None):
    """Runs cmd (a list) n times with a numbered message on stdin, conc at a time."""
    errors = []

    def worker(start):
        for i in range(start, n, conc):
            p = subprocess.run(cmd, input=MESSAGE % (i, i), env=env, capture_output=True, timeout=60)
            if p.returncode != 0:
                errors.append(p.stderr.decode(errors="replace"))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} submissions failed, first: {errors[0]}")


def wait_for(maildir, n, limit):
    end = time.time() + limit
    while time.time() < end:
        if count(maildir) >= n:
            return True
        time.sleep(0.02)
    return False


def run_petrel(bindir, n, conc, limit):
    work = tempfile.mkdtemp(prefix="petrel-bench-")
    sb = os.path.join(work, "sb")
    petrel = os.path.join(bindir, "petrel")
    subprocess.run([petrel, "sandbox", sb, "--port-base", "19000"], check=True, capture_output=True)
    etc = os.path.join(sb, "etc")
    subprocess.run([petrel, "-c", etc, "start"], check=True, capture_output=True)
    pidfile = os.path.join(sb, "spool/pid/master.pid")

    def master_pid():
        try:
            return int(open(pidfile).read().strip())
        except (OSError, ValueError):
            return None

    sampler = Sampler(master_pid)
    sampler.start()
    maildir = os.path.join(sb, "home/demo/Maildir")
    t0 = time.time()
    submit_all([os.path.join(bindir, "sendmail"), "-C", etc, "demo@localhost"], n, conc)
    t_sub = time.time() - t0
    ok = wait_for(maildir, n, limit)
    elapsed = time.time() - t0
    sampler.stop = True
    subprocess.run([petrel, "-c", etc, "stop"], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
    return dict(ok=ok, elapsed=elapsed, submit=t_sub, rate=n / elapsed, rss_kib=sampler.peak)


POSTFIX_MAIN = """\
queue_directory = {q}
data_directory = {d}
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydestination = localhost, $myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
home_mailbox = Maildir/
alias_maps =
alias_database =
compatibility_level = 3.6
maillog_file = {w}/maillog
maillog_file_prefixes = {w}
smtputf8_enable = no
"""


def run_postfix(n, conc, limit):
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/postfix"):
        return None
    work = tempfile.mkdtemp(prefix="postfix-bench-")
    os.chmod(work, 0o755)
    etc, q, d = (os.path.join(work, x) for x in ("etc", "spool", "data"))
    for p in (etc, q, d):
        os.makedirs(p)
    user = "pfbench"
    home = os.path.join(work, "home")
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "-M", "-d", home, user], check=True)
    subprocess.run(["usermod", "-d", home, user], check=True)
    os.makedirs(home)
    pw = pwd.getpwnam(user)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    with open(os.path.join(etc, "main.cf"), "w") as f:
        f.write(POSTFIX_MAIN.format(q=q, d=d, w=work))
    master_cf = open("/etc/postfix/master.cf").read() if os.path.exists("/etc/postfix/master.cf") else ""
    # No listener at all: comment out every inet service.
    lines = []
    for line in master_cf.splitlines():
        parts = line.split()
        if len(parts) > 1 and not line.startswith((" ", "\t", "#")) and parts[1] == "inet":
            line = "#" + line
        lines.append(line)
    with open(os.path.join(etc, "master.cf"), "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chown(d, pwd.getpwnam("postfix").pw_uid, 0)
    env = dict(os.environ, MAIL_CONFIG=etc)
    subprocess.run(["postfix", "-c", etc, "check"], capture_output=True, env=env)
    r = subprocess.run(["postfix", "-c", etc, "start"], capture_output=True, env=env)
    if r.returncode != 0:
        print("postfix did not start:", r.stderr.decode(errors="replace"), file=sys.stderr)
        return None
    pidfile = os.path.join(q, "pid/master.pid")

    def master_pid():
        try:
            return int(open(pidfile).read().strip())
        except (OSError, ValueError):
            return None

    time.sleep(1)
    sampler = Sampler(master_pid)
    sampler.start()
    maildir = os.path.join(home, "Maildir")
    t0 = time.time()
    submit_all(["/usr/sbin/sendmail", "-C", etc, f"{user}@localhost"], n, conc, env=env)
    t_sub = time.time() - t0
    ok = wait_for(maildir, n, limit)
    elapsed = time.time() - t0
    sampler.stop = True
    subprocess.run(["postfix", "-c", etc, "stop"], capture_output=True, env=env)
    time.sleep(0.5)
    shutil.rmtree(work, ignore_errors=True)
    return dict(ok=ok, elapsed=elapsed, submit=t_sub, rate=n / elapsed, rss_kib=sampler.peak)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("-c", type=int, default=10, help="concurrent submitters")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release"))
    ap.add_argument("--limit", type=float, default=600, help="seconds to wait for delivery")
    ap.add_argument("--no-postfix", action="store_true")
    a = ap.parse_args()
    bindir = os.path.abspath(a.bin)
    print(f"local submission: {a.n} messages of {len(MESSAGE % (0, 0))} bytes, {a.c} concurrent sendmail processes")
    p = run_petrel(bindir, a.n, a.c, a.limit)
    print(f"petrel : {p['rate']:8.1f} msg/s  ({p['elapsed']:.2f} s; submission {p['submit']:.2f} s)  peak RSS {p['rss_kib'] / 1024:.1f} MiB{'' if p['ok'] else '  INCOMPLETE'}")
    pf = None if a.no_postfix else run_postfix(a.n, a.c, a.limit)
    if pf is None:
        print("postfix: skipped (needs root and Debian's postfix package)")
        return
    print(f"postfix: {pf['rate']:8.1f} msg/s  ({pf['elapsed']:.2f} s; submission {pf['submit']:.2f} s)  peak RSS {pf['rss_kib'] / 1024:.1f} MiB{'' if pf['ok'] else '  INCOMPLETE'}")
    print(f"ratio petrel/postfix: rate {p['rate'] / pf['rate']:.2f}x, peak RSS {p['rss_kib'] / max(pf['rss_kib'], 1):.2f}x")


if __name__ == "__main__":
    main()
