#!/usr/bin/env python3
"""TLS submission benchmark: STARTTLS + AUTH PLAIN + one message per connection on the
submission port, and logins/s through the auth service, for Petrel and (when Dovecot is
installed) Postfix + Dovecot SASL side by side.

    python3 bench/tls_submit.py --bin target/release [-n 2000] [-c 20] [--logins-n 2000]
                                [--argon-n 40] [--maxproc 1] [--no-postfix]

Per server, on a fresh suite:
  submission    n connections, c at a time, each: greeting, EHLO, STARTTLS, EHLO,
                AUTH PLAIN (initial response), MAIL, RCPT (a local user), DATA, a
                PAYLOAD-byte message, QUIT. No pipelining, TCP_NODELAY.
                conn/s      n / wall time until the last client said QUIT;
                end-to-end  n / time until all n messages are files in the Maildir;
                CPU s       user+system seconds of the whole suite (smtp_in.tree_cpu;
                            for Postfix, its master's tree plus Dovecot's);
                peak RSS    summed VmRSS of the suite (local_submit.Sampler; for
                            Postfix, its master's tree only, Dovecot not counted).
  logins        --logins-n connections, c at a time, each: EHLO, AUTH PLAIN, QUIT.
                tls    on the submission port (STARTTLS first: TLS handshake included);
                plain  on an extra listener with smtpd_tls_auth_only = no, so the figure
                       is mostly the auth service (SHA512-CRYPT, the sandbox's scheme);
                argon2 the plain listener, for a user whose hash is {ARGON2ID} (Petrel's
                       default scheme for real servers), --argon-n logins.
                Every reply code is counted: a 454 means the auth service refused a
                login (throttled), which the figures then say.

Petrel runs in a sandbox from --bin (release binaries), demo's password as `petrel
sandbox` prints it, smtpd_client_connection_count_limit = 0 (one client address opens
every connection). Postfix (as root, Debian's package) with Dovecot's auth service
(smtpd_sasl_type = dovecot) runs only when /usr/sbin/dovecot exists; nothing is installed.

Every loop is bounded in count and time; every connection is to 127.0.0.1.
"""
import argparse
import base64
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import local_submit as ls  # noqa: E402  (RSS sampler, Maildir count)
import smtp_in as si  # noqa: E402  (tree_cpu, wait_greeting, recv_reply, the Postfix suite)

PETREL_PORT_BASE = 17000  # 17025 smtpd, 17587 submission, 17026 plain-AUTH listener
POSTFIX_PORT = 17625
POSTFIX_SUB_PORT = 17687
POSTFIX_PLAIN_AUTH_PORT = 17626
PAYLOAD = 4096
DOVECOT = "/usr/sbin/dovecot"
ARGON_USER, ARGON_PW = "argonbench", "argon-bench-password"


def client_ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())


def message(i):
    return si.body_bytes(i).replace(b"Subject: latency", b"Subject: tls submit")


# ---------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------


class Petrel(si.Petrel):
    def __init__(self, bindir, maxproc, settings=()):
        super().__init__(bindir)
        self.maxproc = maxproc
        self.settings = settings
        self.port = PETREL_PORT_BASE + 25
        self.sub_port = PETREL_PORT_BASE + 587
        self.plain_auth_port = PETREL_PORT_BASE + 26
        self.user = "demo"

    def start(self):
        self.work = tempfile.mkdtemp(prefix="petrel-tls-bench-")
        sb = os.path.join(self.work, "sb")
        out = subprocess.run([self.petrel, "sandbox", sb, "--port-base", str(PETREL_PORT_BASE)],
                             check=True, capture_output=True, timeout=60).stdout.decode()
        self.password = next((l.split(":", 1)[1].strip() for l in out.splitlines()
                              if l.strip().startswith("demo password:")), None)
        if not self.password:
            raise SystemExit("petrel sandbox printed no demo password:\n" + out)
        self.etc = os.path.join(sb, "etc")
        conf = os.path.join(self.etc, "petrel.conf")
        # One {ARGON2ID} user (petrel user add writes auth_password_scheme).
        with open(conf, "a") as f:
            f.write("auth_password_scheme = ARGON2ID\n")
        subprocess.run([self.petrel, "-c", self.etc, "user", "add", ARGON_USER],
                       input=(ARGON_PW + "\n").encode(), check=True, capture_output=True, timeout=60)
        with open(conf, "a") as f:
            f.write("auth_password_scheme = SHA512-CRYPT\n")
            f.write("smtpd_client_connection_count_limit = 0\n")
            for kv in self.settings:
                f.write(kv + "\n")
        services = os.path.join(self.etc, "services.conf")
        text = open(services).read()
        sub = f"127.0.0.1:{self.sub_port}"
        if sub not in text:
            raise SystemExit(f"no submission listener in {services}: is smtpd in {self.bindir}?")
        lines = []
        for line in text.splitlines():
            if line.startswith(sub):
                parts = line.split()
                parts[6] = str(self.maxproc)
                line = " ".join(parts)
            lines.append(line)
        lines.append(f"127.0.0.1:{self.plain_auth_port} inet n - n - {self.maxproc} smtpd"
                     " -o smtpd_sasl_auth_enable=yes -o smtpd_tls_auth_only=no")
        with open(services, "w") as f:
            f.write("\n".join(lines) + "\n")
        subprocess.run([self.petrel, "-c", self.etc, "start"], check=True, capture_output=True, timeout=60)
        self.pidfile = os.path.join(sb, "spool/pid/master.pid")
        self.maildir = os.path.join(sb, "home/demo/Maildir")
        self.rcpt = "demo@localhost"
        for p in (self.port, self.sub_port, self.plain_auth_port):
            si.wait_greeting(p, 30)

    def cpu(self):
        return si.tree_cpu(self.master_pid())


DOVECOT_CONF = """\
base_dir = {w}/dovecot-run
state_dir = {w}/dovecot-state
log_path = {w}/dovecot.log
protocols = none
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
disable_plaintext_auth = no
passdb {{
  driver = passwd-file
  args = {w}/dovecot-users
}}
userdb {{
  driver = static
  args = uid={user} gid={user} home={w}/home
}}
service auth {{
  unix_listener {q}/private/auth {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""

POSTFIX_TLS_EXTRA = """\
smtpd_tls_cert_file = {w}/tls/cert.pem
smtpd_tls_key_file = {w}/tls/key.pem
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
"""


class PostfixDovecot(si.Postfix):
    """smtp_in's throwaway Postfix, plus a submission listener and a plain-AUTH listener
    whose SASL is a throwaway Dovecot auth service (passwd-file, SHA512-CRYPT)."""

    def __init__(self, maxproc):
        super().__init__()
        self.port = POSTFIX_PORT  # not smtp_in's 18525, so the two benches can run together
        self.maxproc = maxproc
        self.sub_port = POSTFIX_SUB_PORT
        self.plain_auth_port = POSTFIX_PLAIN_AUTH_PORT
        self.password = "postfix-bench-password"
        self.dovecot_conf = None

    @staticmethod
    def why_not():
        why = si.Postfix.why_not()
        if why:
            return why
        if not os.path.exists(DOVECOT):
            return f"{DOVECOT} is not installed (Debian's dovecot-core); not installing it"
        return None

    def start(self):
        super().start()  # Postfix with its smtpd on POSTFIX_PORT, home_mailbox Maildir/
        user = self.user
        w = self.work
        os.makedirs(os.path.join(w, "tls"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=bench.localdomain", "-keyout", os.path.join(w, "tls/key.pem"),
                        "-out", os.path.join(w, "tls/cert.pem")], check=True, capture_output=True, timeout=60)
        h = subprocess.run(["openssl", "passwd", "-6", self.password], check=True,
                           capture_output=True, timeout=60).stdout.decode().strip()
        with open(os.path.join(w, "dovecot-users"), "w") as f:
            f.write(f"{user}:{{SHA512-CRYPT}}{h}\n")
        q = os.path.join(w, "spool")
        self.dovecot_conf = os.path.join(w, "dovecot.conf")
        with open(self.dovecot_conf, "w") as f:
            f.write(DOVECOT_CONF.format(w=w, q=q, user=user))
        # dovecot forks into the background with our stdout/stderr: give it none to hold.
        r = subprocess.run([DOVECOT, "-c", self.dovecot_conf], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        if r.returncode != 0:
            why = subprocess.run(["doveconf", "-c", self.dovecot_conf, "-n"], capture_output=True, timeout=60)
            raise RuntimeError(f"dovecot did not start ({r.returncode}): {why.stderr.decode(errors='replace')}")
        with open(os.path.join(self.etc, "main.cf"), "a") as f:
            f.write(POSTFIX_TLS_EXTRA.format(w=w))
        with open(os.path.join(self.etc, "master.cf"), "a") as f:
            f.write(f"127.0.0.1:{self.sub_port} inet n - n - {self.maxproc * 100} smtpd"
                    " -o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes"
                    " -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n")
            f.write(f"127.0.0.1:{self.plain_auth_port} inet n - n - {self.maxproc * 100} smtpd"
                    " -o smtpd_sasl_auth_enable=yes -o smtpd_tls_auth_only=no\n")
        subprocess.run(["postfix", "-c", self.etc, "reload"], capture_output=True, env=self.env, timeout=60)
        for p in (self.sub_port, self.plain_auth_port):
            si.wait_greeting(p, 30)

    def dovecot_pid(self):
        try:
            return int(open(os.path.join(self.work, "dovecot-run/master.pid")).read().strip())
        except (OSError, ValueError, TypeError):
            return None

    def cpu(self):
        pid = self.dovecot_pid()
        return si.tree_cpu(self.master_pid()) + (si.tree_cpu(pid) if pid else 0)

    def stop(self):
        if self.dovecot_conf:
            subprocess.run(["doveadm", "-c", self.dovecot_conf, "stop"], capture_output=True, timeout=60)
        super().stop()


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------


class Session:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")
        self.expect(b"220")

    def expect(self, code):
        r = si.recv_reply(self.f)
        if not r[-1].startswith(code):
            raise RuntimeError(r[-1].decode(errors="replace").strip())
        return r

    def cmd(self, line, code):
        self.sock.sendall(line + b"\r\n")
        return self.expect(code)

    def starttls(self):
        self.cmd(b"STARTTLS", b"220")
        self.f.close()
        self.sock = client_ctx().wrap_socket(self.sock)
        self.f = self.sock.makefile("rb")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


def run_clients(n, conc, limit, one):
    """Calls one(i) for i in 0..n from conc threads; returns (wall s, error list,
    {reply text of a failure: count})."""
    errors, kinds = [], {}
    lock = threading.Lock()
    deadline = time.time() + limit

    def worker(w):
        for i in range(w, n, conc):
            if time.time() > deadline:
                with lock:
                    errors.append("out of time")
                return
            try:
                one(i)
            except Exception as e:  # noqa: BLE001 (counted and reported)
                with lock:
                    errors.append(f"{i}: {e}")
                    k = str(e)[:60]
                    kinds[k] = kinds.get(k, 0) + 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(conc)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1, deadline - time.time()) + 10)
    return time.time() - t0, errors, kinds


def submission(suite, n, conc, limit):
    try:
        suite.start()
        sampler = ls.Sampler(suite.master_pid)
        sampler.start()
        cpu0 = suite.cpu()
        auth = b"AUTH PLAIN " + plain(suite.user, suite.password)
        rcpt = suite.rcpt.encode()
        t0 = time.time()

        def one(i):
            s = Session(suite.sub_port)
            try:
                s.cmd(b"EHLO bench.example", b"250")
                s.starttls()
                s.cmd(b"EHLO bench.example", b"250")
                s.cmd(auth, b"235")
                s.cmd(b"MAIL FROM:<" + rcpt + b">", b"250")
                s.cmd(b"RCPT TO:<" + rcpt + b">", b"250")
                s.cmd(b"DATA", b"354")
                s.sock.sendall(message(i) + b".\r\n")
                s.expect(b"250")
                s.cmd(b"QUIT", b"221")
            finally:
                s.close()

        wall, errors, kinds = run_clients(n, conc, limit, one)
        ok = n - len(errors)
        delivered = ls.wait_for(suite.maildir, ok, max(1, limit - wall))
        t_all = time.time() - t0
        cpu = suite.cpu() - cpu0
        sampler.stop = True
        sampler.join(timeout=5)
        return dict(conn=ok / wall, e2e=ok / t_all, wall=wall, t_all=t_all, cpu=cpu,
                    rss=sampler.peak / 1024, errors=errors, kinds=kinds, delivered=delivered,
                    got=ls.count(suite.maildir), ok=ok)
    finally:
        suite.stop()


def logins(suite, n_sha, n_argon, conc, limit):
    """Logins/s: (name, n, user, password, port, tls) runs on one fresh suite."""
    try:
        suite.start()
        runs = [("tls", n_sha, suite.user, suite.password, suite.sub_port, True),
                ("plain", n_sha, suite.user, suite.password, suite.plain_auth_port, False)]
        if isinstance(suite, Petrel) and n_argon > 0:
            runs.append(("argon2", n_argon, ARGON_USER, ARGON_PW, suite.plain_auth_port, False))
        out = {}
        for name, n, user, pw, port, tls in runs:
            auth = b"AUTH PLAIN " + plain(user, pw)

            def one(i, port=port, tls=tls, auth=auth):
                s = Session(port)
                try:
                    s.cmd(b"EHLO bench.example", b"250")
                    if tls:
                        s.starttls()
                        s.cmd(b"EHLO bench.example", b"250")
                    s.cmd(auth, b"235")
                    s.cmd(b"QUIT", b"221")
                finally:
                    s.close()

            wall, errors, kinds = run_clients(n, conc, limit, one)
            out[name] = dict(n=n, ok=n - len(errors), rate=(n - len(errors)) / wall, wall=wall,
                             errors=errors, kinds=kinds)
        return out
    finally:
        suite.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="submission connections (one message each)")
    ap.add_argument("-c", type=int, default=20, help="concurrent connections")
    ap.add_argument("--logins-n", type=int, default=2000, help="logins per login run")
    ap.add_argument("--argon-n", type=int, default=40, help="logins of the ARGON2ID user (0 = none)")
    ap.add_argument("--maxproc", type=int, default=1, help="Petrel smtpd processes per listener")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release"))
    ap.add_argument("--limit", type=float, default=900, help="seconds allowed for one run")
    ap.add_argument("--no-postfix", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a petrel.conf setting for Petrel's suite (repeatable)")
    a = ap.parse_args()
    bindir = os.path.abspath(a.bin)
    for p in ("smtpd", "authd"):
        if not os.path.exists(os.path.join(bindir, p)):
            raise SystemExit(f"{bindir}/{p} is missing: cargo build --release --workspace --bins")
    suites = [Petrel(bindir, a.maxproc, [kv.replace('=', ' = ', 1) for kv in a.set])]
    why = "--no-postfix" if a.no_postfix else PostfixDovecot.why_not()
    if why is None:
        suites.append(PostfixDovecot(a.maxproc))
    print(f"tls submit: STARTTLS + AUTH PLAIN + one {PAYLOAD}-byte message per connection, "
          f"{a.n} connections, {a.c} at a time (petrel smtpd maxproc {a.maxproc}"
          f"{', ' + ', '.join(a.set) if a.set else ''})")
    if why:
        print(f"postfix + dovecot: skipped ({why})")
    print(f"  {'':<8} {'conn/s':>8} {'end-to-end/s':>12} {'CPU s':>8} {'peak RSS MiB':>12}")
    res = {}
    for s in suites:
        r = submission(s, a.n, a.c, a.limit)
        res[s.name] = r
        flag = "" if r["delivered"] and not r["errors"] else \
            f"  {len(r['errors'])} FAILED {r['kinds']} ({r['got']} delivered)"
        print(f"  {s.name:<8} {r['conn']:8.1f} {r['e2e']:12.1f} {r['cpu']:8.2f} {r['rss']:12.1f}"
              f"  ({r['wall']:.2f} s / {r['t_all']:.2f} s){flag}", flush=True)
    if len(res) == 2:
        p, q = res["petrel"], res["postfix"]
        print(f"  {'ratio':<8} {p['conn'] / q['conn']:7.2f}x {p['e2e'] / q['e2e']:11.2f}x"
              f" {p['cpu'] / max(q['cpu'], 0.001):7.2f}x   (petrel / postfix)")
    print(f"logins (EHLO, AUTH PLAIN, QUIT per connection; {a.c} at a time):")
    lg = {}
    for s in suites:
        lg[s.name] = r = logins(s, a.logins_n, a.argon_n, a.c, a.limit)
        for name, x in r.items():
            flag = "" if not x["errors"] else f"  {len(x['errors'])} REFUSED/FAILED {x['kinds']}"
            print(f"  {s.name:<8} {name:<7} {x['rate']:8.1f} logins/s  ({x['ok']}/{x['n']} in {x['wall']:.2f} s){flag}",
                  flush=True)
    if len(lg) == 2:
        for name in ("tls", "plain"):
            p, q = lg["petrel"][name], lg["postfix"][name]
            print(f"  {'ratio':<8} {name:<7} {p['rate'] / q['rate']:7.2f}x   (petrel / postfix+dovecot)")


if __name__ == "__main__":
    main()
