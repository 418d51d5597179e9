#!/usr/bin/env python3
"""Outbound SMTP benchmark: N queued messages to 50 recipient domains, delivered by the
MTA's SMTP client to Postfix's smtp-sink on loopback; Petrel and Postfix side by side.

    python3 bench/smtp_out.py --bin target/release [-n 5000] [-d 50] [-c 8]
                              [--mode maildrop,deferred] [--repeat 1] [--limit 570]
                              [--no-postfix] [--no-petrel] [--keep]

Set-up, the same for both suites, each on its own fresh instance:
  - one smtp-sink (`smtp-sink -c -u nobody 127.0.0.1:PORT 1000`, from Debian's postfix
    package), started fresh for each run so its message count is per run;
  - transport_maps = texthash:FILE with `dN.sink.test  smtp:[127.0.0.1]:PORT` for
    N = 1..d: an IP literal in brackets, so neither MTA looks anything up (Postfix also
    has smtp_dns_support_level = disabled; the Petrel sandbox's dns_servers points at a
    port where nothing listens). All d domains share one next hop, so both queue managers
    see one destination: default_destination_concurrency_limit (20 on both) bounds the
    parallel SMTP sessions, and both reuse connections (connection caches, defaults);
  - smtp_tls_security_level = none (smtp-sink has no TLS); everything else default;
  - messages of about 3 KiB, one recipient each, user{i}@d{i % d + 1}.sink.test, from
    bench@bench.test.

Procedure, the same for both; two modes (--mode, default both), each run on a fresh
instance that was first started and stopped once (creates the queue, warms the page cache):
  maildrop  with the MTA STOPPED, all N messages are submitted with its own sendmail
            (-c processes at a time; sendmail → postdrop → maildrop/, which works while the
            mail system is down). The clock starts when the start command is issued; the
            timed path is pickup → cleanup → queue manager → SMTP client → sink.
  deferred  the MTA runs while the sink is not listening yet: the N messages are
            submitted, picked up, tried (connection refused) and deferred; once all N
            are in deferred/, the MTA is stopped (so no dead-host or back-off state
            survives in memory) and the sink started. The clock starts when the start
            command is issued, followed at once by a flush (`postqueue -f` / `petrel
            queue flush`, which makes every deferred message due). The timed path is
            queue manager → SMTP client → sink: this mode isolates the SMTP client and the
            scheduler from pickup and cleanup, which bound the maildrop mode's rate.
Figures per run:
  total msg/s   N / (start command issued → the sink has received N messages): pickup,
                cleanup, queue manager and SMTP client, the whole outbound path;
  sink msg/s    (N-1) / (first → N-th message at the sink): the steady delivery rate,
                without the start-up and the first message's trip through the queue;
  maildrop s    when maildrop/ was empty (pickup + cleanup done, ±0.25 s): if this is
                close to the total, the SMTP client was not what limited the rate;
  CPU s         user+system seconds of the whole MTA (master and every descendant, since
                its start: utime+stime+cutime+cstime of the living tree, read after the
                N-th message arrived, before stopping; exited processes are in their
                parent's cutime/cstime). sendmail/postdrop (the submission, before the
                clock starts) and smtp-sink are not counted; the sink's CPU is printed
                so one can see it was not the bottleneck;
  peak RSS/PSS  of the MTA's process tree, sampled every 100 ms (smaps_rollup).
  sessions      SMTP sessions the sink saw (connection reuse), and CPU s by program
                (the master's figure includes its exited children).
With --repeat R each mode runs R rounds, the suites' order reversed every other round
(the machine's load drifts: other jobs on it move these figures a lot), and the median
of the per-round ratios is printed.
Afterwards each suite's log is read for `status=sent ... delay=, delays=a/b/c/d` lines:
mean/median/max of the delay and of each part (a before the queue manager, b in it,
c connection set-up, d transmission) say where the time went.

Petrel runs in a sandbox (`petrel sandbox DIR --port-base 16000`, release binaries from
--bin, which must hold the smtp agent); Postfix (Debian's package, as root only) from a
throwaway config and queue directory with no listener at all. Ports: Petrel's sandbox
16000+ (16025, 16053, 16110, ...), sinks on 16525 (Petrel) and 16526 (Postfix).

Every loop is bounded in count and time: queueing at most --submit-limit s per run,
delivery at most --delivery-limit s per run, and the whole run stops after --limit s;
when delivery stalls, what was delivered and the queue's state are printed and the exit
status is 1. Every connection is to 127.0.0.1.
"""
import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

PETREL_PORT_BASE = 16000
PETREL_SINK_PORT = 16525
POSTFIX_SINK_PORT = 16526
SENDER = "bench@bench.test"


def message(i, domains):
    rcpt = recipient(i, domains)
    head = (f"From: Bench <{SENDER}>\nTo: <{rcpt}>\nSubject: outbound bench {i}\n"
            f"X-Seq: {i}\n\n").encode()
    body = b"".join(b"%04d " % n + b"x" * 72 + b"\n" for n in range(36))
    return head + body


def recipient(i, domains):
    return f"user{i}@d{i % domains + 1}.sink.test"


def transport_text(domains, port):
    return "".join(f"d{n}.sink.test smtp:[127.0.0.1]:{port}\n" for n in range(1, domains + 1))


def dir_count(path):
    try:
        return sum(1 for _ in os.scandir(path))
    except OSError:
        return -1


def queue_state(qdir):
    """Files per queue directory (walking hashed subdirectories one level down)."""
    out = {}
    for d in ("maildrop", "incoming", "active", "deferred", "hold"):
        p = os.path.join(qdir, d)
        n = 0
        try:
            for e in os.scandir(p):
                n += dir_count(e.path) if e.is_dir() else 1
        except OSError:
            n = -1
        out[d] = n
    return out


# ---------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------


class Petrel:
    name = "petrel"

    def __init__(self, bindir, domains):
        self.bindir, self.domains = bindir, domains
        self.petrel = os.path.join(bindir, "petrel")
        self.sink_port = PETREL_SINK_PORT
        self.work = None

    @staticmethod
    def why_not(bindir):
        for p in ("petrel", "smtp", "master", "qmgr", "pickup", "cleanup", "postdrop", "sendmail"):
            if not os.access(os.path.join(bindir, p), os.X_OK):
                return f"{bindir}/{p} is missing: cargo build --release --workspace --bins"
        return None

    def setup(self):
        self.work = tempfile.mkdtemp(prefix="petrel-smtp-out-")
        sb = os.path.join(self.work, "sb")
        subprocess.run([self.petrel, "sandbox", sb, "--port-base", str(PETREL_PORT_BASE)],
                       check=True, capture_output=True, timeout=60)
        self.etc = os.path.join(sb, "etc")
        self.qdir = os.path.join(sb, "spool")
        self.logfile = os.path.join(sb, "log/maillog")
        transport = os.path.join(self.etc, "transport")
        with open(transport, "w") as f:
            f.write(transport_text(self.domains, self.sink_port))
        with open(os.path.join(self.etc, "petrel.conf"), "a") as f:
            f.write(f"\n# bench/smtp_out.py\ntransport_maps = texthash:{transport}\n"
                    "smtp_tls_security_level = none\n")
        services = open(os.path.join(self.etc, "services.conf")).read()
        if not any(line.split()[:1] == ["smtp"] for line in services.splitlines()):
            raise RuntimeError(f"no smtp service in {self.etc}/services.conf")
        self.pidfile = os.path.join(self.qdir, "pid/master.pid")
        # Once up and down: checks the configuration, warms the page cache.
        self.start()
        self.stop()

    def start(self):
        r = subprocess.run([self.petrel, "-c", self.etc, "start"], capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("petrel start: " + (r.stdout + r.stderr).decode(errors="replace"))

    def stop(self):
        pid = self.master_pid()
        subprocess.run([self.petrel, "-c", self.etc, "stop"], capture_output=True, timeout=60)
        bl.wait_gone(pid, 30)

    def master_pid(self):
        return bl.read_pid(self.pidfile)

    def flush(self):
        subprocess.run([self.petrel, "-c", self.etc, "queue", "flush"], capture_output=True, timeout=60)

    def sendmail(self, rcpt):
        return [os.path.join(self.bindir, "sendmail"), "-C", self.etc, "-f", SENDER, "-i", rcpt], None

    def log_text(self):
        try:
            return open(self.logfile, errors="replace").read()
        except OSError:
            return ""

    def remove(self):
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)


POSTFIX_MAIN = """\
queue_directory = {q}
data_directory = {d}
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydestination = localhost, $myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
compatibility_level = 3.6
maillog_file = {w}/maillog
maillog_file_prefixes = {w}
smtputf8_enable = no
transport_maps = texthash:{etc}/transport
smtp_tls_security_level = none
smtp_dns_support_level = disabled
"""


class Postfix:
    name = "postfix"

    def __init__(self, domains):
        self.domains = domains
        self.sink_port = POSTFIX_SINK_PORT
        self.work = None

    @staticmethod
    def why_not():
        if os.geteuid() != 0:
            return "needs root (mail_owner postfix, setgid postdrop)"
        if not os.path.exists("/usr/sbin/postfix"):
            return "Debian's postfix package is not installed"
        try:
            pwd.getpwnam("postfix")
        except KeyError:
            return "no postfix system user"
        return None

    def setup(self):
        self.work = tempfile.mkdtemp(prefix="postfix-smtp-out-")
        os.chmod(self.work, 0o755)
        etc, q, d = (os.path.join(self.work, x) for x in ("etc", "spool", "data"))
        for p in (etc, q, d):
            os.makedirs(p)
        self.etc, self.qdir = etc, q
        self.logfile = os.path.join(self.work, "maillog")
        with open(os.path.join(etc, "transport"), "w") as f:
            f.write(transport_text(self.domains, self.sink_port))
        with open(os.path.join(etc, "main.cf"), "w") as f:
            f.write(POSTFIX_MAIN.format(q=q, d=d, w=self.work, etc=etc))
        master_cf = open("/etc/postfix/master.cf").read() if os.path.exists("/etc/postfix/master.cf") else ""
        # No listener at all (every inet service commented out), and nothing chrooted
        # (the throwaway queue directory has no etc/ files for a chroot; Petrel's sandbox
        # chroots nothing either).
        lines = []
        for line in master_cf.splitlines():
            parts = line.split()
            if len(parts) >= 8 and not line.startswith((" ", "\t", "#")):
                if parts[1] == "inet":
                    line = "#" + line
                elif parts[4] == "y":
                    parts[4] = "n"
                    line = " ".join(parts)
            lines.append(line)
        with open(os.path.join(etc, "master.cf"), "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chown(d, pwd.getpwnam("postfix").pw_uid, 0)
        self.env = dict(os.environ, MAIL_CONFIG=etc)
        self.pidfile = os.path.join(q, "pid/master.pid")
        subprocess.run(["postfix", "-c", etc, "check"], capture_output=True, env=self.env, timeout=60)
        self.start()
        self.stop()

    def start(self):
        r = subprocess.run(["postfix", "-c", self.etc, "start"], capture_output=True, env=self.env, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("postfix start: " + (r.stdout + r.stderr).decode(errors="replace"))
        end = time.time() + 10
        while self.master_pid() is None and time.time() < end:
            time.sleep(0.02)

    def stop(self):
        pid = self.master_pid()
        subprocess.run(["postfix", "-c", self.etc, "stop"], capture_output=True, env=self.env, timeout=60)
        bl.wait_gone(pid, 30)

    def master_pid(self):
        pid = bl.read_pid(self.pidfile)
        return pid if bl.alive(pid) else None

    def flush(self):
        subprocess.run(["postqueue", "-c", self.etc, "-f"], capture_output=True, env=self.env, timeout=60)

    def sendmail(self, rcpt):
        return ["/usr/sbin/sendmail", "-C", self.etc, "-f", SENDER, "-i", rcpt], self.env

    def log_text(self):
        try:
            return open(self.logfile, errors="replace").read()
        except OSError:
            return ""

    def remove(self):
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------


def run(suite, mode, n, domains, conc, submit_limit, delivery_limit, keep=False):
    """One timed run on a fresh instance of `suite`; mode "maildrop" or "deferred"."""
    res = dict(name=suite.name, mode=mode, ok=False, got=0, err="")
    sink = bl.Sink(suite.sink_port, expect=n)
    try:
        suite.setup()

        def one(i):
            cmd, env = suite.sendmail(recipient(i, domains))
            p = subprocess.run(cmd, input=message(i, domains), env=env, capture_output=True, timeout=60)
            if p.returncode != 0:
                raise RuntimeError(f"exit {p.returncode}: {p.stderr.decode(errors='replace').strip()[:300]}")

        t = time.time()
        if mode == "deferred":
            suite.start()  # running, the sink not listening yet: every message is deferred
        done, errors = bl.run_parallel(n, conc, submit_limit, one)
        if errors or done != n:
            res["err"] = f"{len(errors)} submissions failed, first: {errors[:1]}"
            return res
        if mode == "deferred":
            end = t + submit_limit
            while time.time() < end:
                qs = queue_state(suite.qdir)
                if qs["deferred"] >= n and qs["maildrop"] == qs["incoming"] == qs["active"] == 0:
                    break
                time.sleep(0.25)
            suite.stop()
            qs = queue_state(suite.qdir)
            if qs["deferred"] != n:
                res["err"] = f"after {submit_limit:.0f} s not all {n} messages were deferred: {qs}"
                return res
        res["submit"] = time.time() - t
        res["queued"] = queue_state(suite.qdir)
        log_mark = len(suite.log_text())

        sink.start()
        sampler = bl.MemorySampler(suite.master_pid)
        maildrop = os.path.join(suite.qdir, "maildrop")
        marks = {}

        def tick():
            if mode == "maildrop" and "maildrop" not in marks and dir_count(maildrop) == 0:
                marks["maildrop"] = time.time() - t0

        t0 = time.time()
        suite.start()
        sampler.start()
        if mode == "deferred":
            suite.flush()
        ok = sink.wait(n, t0 + delivery_limit, on_tick=tick)
        t_end = (sink.t_done or time.time()) - t0
        res["by_program"] = bl.tree_cpu_by_program(suite.master_pid())
        res["cpu"] = sum(res["by_program"].values())
        sampler.stop = True
        sampler.join(timeout=5)
        tick()
        res.update(ok=ok, got=sink.count, total=t_end, rss=sampler.peak_rss / 1024, pss=sampler.peak_pss / 1024,
                   maildrop=marks.get("maildrop"), sink_cpu=sink.cpu(),
                   first=(sink.t_first - t0) if sink.t_first else None)
        if sink.t_first and sink.t_done and sink.t_done > sink.t_first:
            res["span"] = sink.t_done - sink.t_first
        if not ok:
            res["err"] = f"only {sink.count} of {n} at the sink after {delivery_limit:.0f} s; queue {queue_state(suite.qdir)}"
        time.sleep(0.5)  # let the last log lines land
        res["delays"] = bl.delivery_stats(suite.log_text()[log_mark:])
        return res
    except Exception as e:  # noqa: BLE001 (reported as this suite's failure)
        res["err"] = f"{type(e).__name__}: {e}"
        return res
    finally:
        try:
            if suite.work:
                suite.stop()
        except Exception as e:  # noqa: BLE001
            print(f"  ({suite.name} stop: {e})", file=sys.stderr)
        if sink.proc:
            # Cached connections end when the MTA stops; then the session count is final.
            time.sleep(0.3)
            res["sessions"] = max(0, sink.sessions - 1)  # minus start()'s probe
        sink.stop()
        if keep:
            res["kept"] = suite.work
        else:
            suite.remove()


def fmt(r, n):
    head = f"  {r['mode']:<8} {r['name']:<8}"
    if "total" not in r:
        return f"{head} FAILED: {r['err']}"
    span = f"{(n - 1) / r['span']:9.1f}" if r.get("span") else f"{'-':>9}"
    md = f"{r['maildrop']:9.2f}" if r.get("maildrop") is not None else f"{'-':>9}"
    first = f"{r['first']:6.2f}" if r.get("first") is not None else f"{'-':>6}"
    rate = (n if r["ok"] else r["got"]) / r["total"]  # an incomplete run: what did arrive
    line = (f"{head} {rate:9.1f} {span} {r['total']:8.2f} {first} {md}"
            f" {r['cpu']:7.2f} {r['rss']:8.1f} {r['pss']:8.1f} {r['sink_cpu']:8.2f}")
    if not r["ok"]:
        line += f"  INCOMPLETE: {r['err']}"
    return line


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000, help="messages")
    ap.add_argument("-d", type=int, default=50, help="recipient domains")
    ap.add_argument("-c", type=int, default=8, help="concurrent sendmail processes while queueing")
    ap.add_argument("--mode", default="maildrop,deferred",
                    help="comma-separated: maildrop (queued in maildrop/ while stopped), deferred (flushed from deferred/)")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release"))
    ap.add_argument("--limit", type=float, default=570, help="seconds for the whole run")
    ap.add_argument("--submit-limit", type=float, default=90, help="seconds to queue the messages, per run")
    ap.add_argument("--delivery-limit", type=float, default=120, help="seconds to deliver them, per run")
    ap.add_argument("--no-postfix", action="store_true")
    ap.add_argument("--no-petrel", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds per mode (suite order alternating), with the median ratio; mind --limit")
    ap.add_argument("--keep", action="store_true", help="keep each run's directory (logs, queue) and say where")
    a = ap.parse_args()
    deadline = time.time() + a.limit
    modes = [m.strip() for m in a.mode.split(",") if m.strip()]
    if a.repeat < 1 or a.n < 2 or a.d < 1 or a.c < 1:
        raise SystemExit("-n must be >= 2, and -d, -c, --repeat >= 1")
    if not modes or any(m not in ("maildrop", "deferred") for m in modes):
        raise SystemExit(f"--mode: maildrop and/or deferred, not {a.mode!r}")
    if not os.path.exists(bl.SMTP_SINK):
        raise SystemExit(f"{bl.SMTP_SINK} is missing: apt-get install postfix (it ships smtp-sink)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            raise SystemExit("smtp-sink runs as root only with -u USER, and there is no user nobody")
    bindir = os.path.abspath(a.bin)
    suites, skipped = [], []
    why = "--no-petrel" if a.no_petrel else Petrel.why_not(bindir)
    if why is None:
        suites.append(Petrel(bindir, a.d))
    else:
        skipped.append(f"petrel: skipped ({why})")
    why = "--no-postfix" if a.no_postfix else Postfix.why_not()
    if why is None:
        suites.append(Postfix(a.d))
    else:
        skipped.append(f"postfix: skipped ({why})")
    print(f"smtp out: {a.n} messages of ~{len(message(0, a.d))} bytes, 1 recipient each, {a.d} domains"
          f" → smtp-sink on 127.0.0.1 (one next hop); queued by {a.c} parallel sendmail")
    for s in skipped:
        print(s)
    if not suites:
        return 1
    print(f"  {'mode':<8} {'':<8} {'total/s':>9} {'sink/s':>9} {'total s':>8} {'1st s':>6} {'maildrop':>9}"
          f" {'CPU s':>7} {'RSS MiB':>8} {'PSS MiB':>8} {'sink CPU':>8}")
    results, status = {}, 0
    # Round r of a mode runs the suites in turn, reversing the order every other round so
    # that a drift in the machine's load does not always favour the same suite.
    runs = [(m, r, s) for m in modes for r in range(a.repeat) for s in (suites if r % 2 == 0 else suites[::-1])]
    ratios = {}
    for k, (mode, rnd, s) in enumerate(runs):
        # Share what is left of --limit among the runs still to come.
        left = (deadline - time.time() - 20) / (len(runs) - k)
        if left < 20:
            print(f"  {mode:<8} {s.name:<8} not run: --limit {a.limit:.0f} s used up")
            status = 1
            continue
        sl = min(a.submit_limit, left / 2)
        r = run(s, mode, a.n, a.d, a.c, sl, min(a.delivery_limit, left - sl), a.keep)
        r["round"] = rnd
        results[(mode, rnd, s.name)] = r
        print(fmt(r, a.n), flush=True)
        if not r["ok"]:
            status = 1
        p, q = results.get((mode, rnd, "petrel")), results.get((mode, rnd, "postfix"))
        if p and q and p["ok"] and q["ok"] and (p is r or q is r):
            ratio = q["total"] / p["total"]
            ratios.setdefault(mode, []).append(ratio)
            span = f", sink/s {q['span'] / p['span']:.2f}x" if p.get("span") and q.get("span") else ""
            print(f"  {mode:<8} {'ratio':<8} total/s {ratio:.2f}x{span},"
                  f" CPU {p['cpu'] / max(q['cpu'], 0.001):.2f}x, PSS {p['pss'] / max(q['pss'], 0.001):.2f}x"
                  "  (petrel/postfix: >1 = petrel faster for rates, more for CPU/PSS; target total/s >= 1.5x)",
                  flush=True)
    if a.repeat > 1:
        for mode, rs in ratios.items():
            rs = sorted(rs)
            h = len(rs) // 2
            median = rs[h] if len(rs) % 2 else (rs[h - 1] + rs[h]) / 2
            print(f"  {mode:<8} total/s ratio over {len(rs)} rounds: median {median:.2f}x,"
                  f" min {rs[0]:.2f}x, max {rs[-1]:.2f}x")
    print("details:")
    for (mode, rnd, name), r in results.items():
        tag = f"{mode:<8} {name:<8}" + (f" #{rnd + 1}" if a.repeat > 1 else "")
        if "submit" in r:
            print(f"  {tag} queueing {r['submit']:.1f} s; queue at start: {r.get('queued', {})}")
        if "sessions" in r:
            print(f"  {tag} SMTP sessions at the sink: {r['sessions']}"
                  f" ({r['got'] / max(r['sessions'], 1):.1f} messages per session)")
        if "kept" in r:
            print(f"  {tag} kept: {r['kept']}")
        if r.get("by_program"):
            top = sorted(r["by_program"].items(), key=lambda kv: -kv[1])
            print(f"  {tag} CPU s by program: " + ", ".join(f"{k} {v:.2f}" for k, v in top if v >= 0.01))
        if "delays" in r:
            print(f"  {tag} log: {bl.fmt_delays(r['delays'])}")
    print("columns: total/s = n / (start → n-th message at the sink); sink/s = (n-1) / (1st → n-th at the sink);"
          " 1st s, maildrop = seconds from start to the first message at the sink / to an empty maildrop/;"
          " CPU s = the MTA's whole process tree; sink CPU = smtp-sink's own")
    return status


if __name__ == "__main__":
    sys.exit(main())
