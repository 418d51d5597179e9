"""Shared helpers for the benchmarks in bench/: process-tree CPU and memory from /proc, a peak
sampler, bounded parallel submission, Postfix's smtp-sink as a counting receiver, and a
reader for the `delays=a/b/c/d` fields of Postfix-style delivery log lines, and Dovecot
run from a throwaway configuration as the peer of imap.py and pop3.py.

Every loop here is bounded in count or time.
"""
import os
import re
import socket
import subprocess
import threading
import time

CLK = os.sysconf("SC_CLK_TCK")
SMTP_SINK = "/usr/sbin/smtp-sink"


def _proc_table():
    """{pid: (ppid, ticks)} for every process, ticks = utime+stime+cutime+cstime."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # fields[0] is the state (field 3 of proc(5)); utime is field 14 → fields[11].
            table[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
        except (OSError, ValueError, IndexError):
            continue
    return table


def tree_pids(root_pid, table=None):
    """root_pid and all its living descendants."""
    table = _proc_table() if table is None else table
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root_pid]
    while todo and len(out) < 100000:
        pid = todo.pop()
        if pid not in table:
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu(root_pid):
    """CPU seconds (user+system) of root_pid and its descendants since they started: each
    living process's utime+stime+cutime+cstime. A process that exited was reaped by its
    parent, so its time sits in the parent's cutime/cstime and is counted once."""
    if not root_pid:
        return 0.0
    table = _proc_table()
    return sum(table[p][1] for p in tree_pids(root_pid, table)) / CLK


def tree_cpu_by_program(root_pid):
    """{program name (comm): CPU seconds} over root_pid's living tree, as tree_cpu counts
    them; the root is named `NAME+exited`: its figure includes what its reaped children
    used)."""
    out = {}
    if not root_pid:
        return out
    table = _proc_table()
    for pid in tree_pids(root_pid, table):
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            name = "?"
        if pid == root_pid:
            name += "+exited"
        out[name] = out.get(name, 0.0) + table[pid][1] / CLK
    return out


def pid_cpu(pid):
    """CPU seconds (user+system, own and reaped children) of one process, 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / CLK
    except (OSError, ValueError, IndexError):
        return 0.0


def tree_memory(root_pid):
    """(RSS KiB, PSS KiB) summed over root_pid and its descendants (smaps_rollup)."""
    return pids_memory(tree_pids(root_pid))


def pids_memory(pids):
    """(RSS KiB, PSS KiB) summed over pids (smaps_rollup); vanished ones count 0."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            pass
    return rss, pss


class MemorySampler(threading.Thread):
    """Peak RSS and PSS (KiB) of a process tree, sampled every `interval` seconds until
    `stop` is set (or `limit` seconds have passed)."""

    def __init__(self, pid_fn, interval=0.1, limit=3600):
        super().__init__(daemon=True)
        self.pid_fn, self.interval, self.limit = pid_fn, interval, limit
        self.peak_rss = self.peak_pss = 0
        self.stop = False

    def run(self):
        end = time.time() + self.limit
        while not self.stop and time.time() < end:
            pid = self.pid_fn()
            if pid:
                rss, pss = tree_memory(pid)
                self.peak_rss = max(self.peak_rss, rss)
                self.peak_pss = max(self.peak_pss, pss)
            time.sleep(self.interval)


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def wait_gone(pid, limit):
    """Waits up to `limit` seconds for pid to exit; True when it did."""
    end = time.time() + limit
    while time.time() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def run_parallel(n, conc, limit, one):
    """Calls one(i) for i in range(n) from `conc` threads; stops starting new calls after
    `limit` seconds. Returns (calls done, list of error strings)."""
    errors, done = [], [0]
    lock = threading.Lock()
    deadline = time.time() + limit

    def worker(w):
        for i in range(w, n, conc):
            if time.time() > deadline:
                with lock:
                    errors.append(f"worker {w}: out of time at message {i}")
                return
            try:
                one(i)
                with lock:
                    done[0] += 1
            except Exception as e:  # noqa: BLE001 (collected and reported by the caller)
                with lock:
                    errors.append(f"message {i}: {e}")

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.time()) + 70)
    return done[0], errors


class Sink:
    """Postfix's smtp-sink on 127.0.0.1:port, counting messages (`-c`: it prints
    `sess=N quit=N mesg=N` after every session end, QUIT and final dot). A reader thread
    keeps the latest counts (messages; sessions ended, including start()'s own probe) and
    the times the first and the `expect`-th message arrived."""

    def __init__(self, port, user="nobody", expect=0):
        self.port, self.user, self.expect = port, user, expect
        self.proc = None
        self.count = self.sessions = 0
        self.t_first = self.t_done = None
        self.cond = threading.Condition()

    def start(self):
        self.proc = subprocess.Popen(
            [SMTP_SINK, "-c", "-u", self.user, f"127.0.0.1:{self.port}", "1000"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()
        # Wait until smtp-sink accepts a connection and greets.
        end = time.time() + 10
        last = None
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"smtp-sink exited with status {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(256).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        s.recv(256)
                        return
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError(f"smtp-sink on 127.0.0.1:{self.port} did not answer ({last})")

    def _read(self):
        pat = re.compile(rb"sess=(\d+) quit=\d+ mesg=(\d+)")
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            buf += chunk
            parts = re.split(rb"[\r\n]", buf)
            buf = parts.pop()  # the unfinished piece
            for p in reversed(parts):
                m = pat.search(p)
                if m:
                    now = time.time()
                    with self.cond:
                        self.sessions = int(m.group(1))
                        self.count = int(m.group(2))
                        if self.count > 0 and self.t_first is None:
                            self.t_first = now
                        if self.expect and self.count >= self.expect and self.t_done is None:
                            self.t_done = now
                        self.cond.notify_all()
                    break

    def wait(self, n, deadline, on_tick=None, tick=0.25):
        """Waits until n messages arrived or time.time() passes deadline; calls
        on_tick() about every `tick` seconds meanwhile. True when n arrived."""
        next_tick = time.time()
        while True:
            with self.cond:
                if self.count >= n:
                    return True
                now = time.time()
                if now >= deadline:
                    return False
                self.cond.wait(timeout=min(tick, deadline - now))
            if on_tick and time.time() >= next_tick:
                on_tick()
                next_tick = time.time() + tick

    def cpu(self):
        return pid_cpu(self.proc.pid) if self.proc else 0.0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


DELAYS = re.compile(r"\bdelay=([\d.]+), delays=([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+)")


def delivery_stats(log_text):
    """From Postfix-style log lines: how many recipients were sent, deferred and bounced,
    and for the sent ones the mean, median and maximum of delay= and of each delays=
    component (a: before the queue manager, b: in the queue manager, c: connection set-up,
    d: transmission)."""
    sent, deferred, bounced = [], 0, 0
    for line in log_text.splitlines():
        if "status=deferred" in line:
            deferred += 1
        elif "status=bounced" in line:
            bounced += 1
        elif "status=sent" in line:
            m = DELAYS.search(line)
            if m:
                sent.append(tuple(float(x) for x in m.groups()))
    stats = {"sent": len(sent), "deferred": deferred, "bounced": bounced}
    for k, name in enumerate(("delay", "a", "b", "c", "d")):
        vals = sorted(v[k] for v in sent)
        if vals:
            stats[name] = (sum(vals) / len(vals), vals[len(vals) // 2], vals[-1])
    return stats


def fmt_delays(stats):
    parts = [f"sent {stats['sent']}, deferred {stats['deferred']}, bounced {stats['bounced']}"]
    for name in ("delay", "a", "b", "c", "d"):
        if name in stats:
            mean, med, mx = stats[name]
            parts.append(f"{name} {mean:.2f}/{med:.2f}/{mx:.2f}")
    return "; ".join(parts) + "  (mean/median/max s)"


# ---------------------------------------------------------------------------------------
# What the mail-access benches (imap.py, pop3.py) share: small helpers, and Dovecot run
# from a throwaway configuration as the peer.

def comm(pid):
    """A process's name, or "?" once it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def cpu(pids):
    """CPU seconds the processes used so far."""
    return sum(pid_cpu(p) for p in pids)


def median(xs):
    xs = sorted(xs)
    h = len(xs) // 2
    return xs[h] if len(xs) % 2 else (xs[h - 1] + xs[h]) / 2


def prec(x):
    """Decimals that show about 3 significant digits."""
    return 1 if abs(x) >= 100 else 2 if abs(x) >= 1 else 3 if abs(x) >= 0.1 else 4


def chown_tree(top, uid, gid):
    """Gives a directory tree to uid:gid (nothing when uid is None)."""
    if uid is None:
        return
    for d, _dirs, files in os.walk(top):
        os.chown(d, uid, gid)
        for f in files:
            try:
                os.chown(os.path.join(d, f), uid, gid)
            except FileNotFoundError:
                pass


def wait_greeting(port, limit, greeting, bye, proto):
    """Waits (at most `limit` s) until 127.0.0.1:port greets with `greeting`; says `bye`."""
    end = time.time() + limit
    last = None
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(256).startswith(greeting):
                    s.sendall(bye)
                    return
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers {proto} on 127.0.0.1:{port} ({last})")


def dovecot_version():
    try:
        return subprocess.run(["dovecot", "--version"], capture_output=True, timeout=10).stdout.decode().split()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


class Dovecot:
    """Dovecot from its own configuration in WORK/dovecot (`dovecot -c CONF`), never as a
    system service. Subclasses write the configuration and say how to wait for it
    (`wait_ready`). Dovecot refuses mail access as uid 0, so as root its user is `mail`."""
    name = "dovecot"
    # The Debian package and the program that must be there, for why_not().
    package = "dovecot-core"
    program = "/usr/sbin/dovecot"

    def __init__(self, work):
        self.w = os.path.join(work, "dovecot")
        self.conf = os.path.join(self.w, "dovecot.conf")
        self.master = None
        if os.geteuid() == 0:
            import pwd
            u = pwd.getpwnam("mail")
            self.uid, self.gid = u.pw_uid, u.pw_gid
        else:
            self.uid, self.gid = os.geteuid(), os.getegid()

    @classmethod
    def why_not(cls):
        import pwd
        import shutil
        if not shutil.which("dovecot") or not os.path.exists(cls.program):
            return f"Debian's {cls.package} is not installed"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("mail")
            except KeyError:
                return "running as root and there is no `mail` user for Dovecot's mail uid"
        return None

    def wait_ready(self):
        raise NotImplementedError

    def start(self):
        # Not capture_output: the daemon would keep the pipes open.
        with open(os.path.join(self.w, "start.out"), "wb") as out:
            r = subprocess.run(["dovecot", "-c", self.conf], stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("dovecot: " + open(os.path.join(self.w, "start.out"), errors="replace").read())
        end = time.time() + 10
        while self.master is None and time.time() < end:
            self.master = read_pid(os.path.join(self.w, "run/master.pid"))
            time.sleep(0.05)
        self.wait_ready()

    def stop(self):
        import signal
        subprocess.run(["doveadm", "-c", self.conf, "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        if self.master and not wait_gone(self.master, 15):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(self.master, sig)
                except ProcessLookupError:
                    break
                if wait_gone(self.master, 10):
                    break
        self.master = None

    def log_errors(self):
        """Error, fatal and warning lines of its log (not the one `doveadm stop` causes)."""
        try:
            text = open(os.path.join(self.w, "dovecot.log"), errors="replace").read()
        except OSError:
            return []
        return [line for line in text.splitlines() if ("Error" in line or "Fatal" in line or "Warning" in line)
                and "Killed with signal 15" not in line]
