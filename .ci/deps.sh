#!/bin/sh
# Installs what the tests and benchmarks use, from Debian's packages, when run as root.
# Peers that start services when installed (postfix) are installed with a policy-rc.d
# that forbids starting them: we only ever run them from our own config dirs.
set -eu
need=""
command -v swaks >/dev/null 2>&1 || need="$need swaks"
[ -x /usr/sbin/postfix ] || need="$need postfix"
command -v mandoc >/dev/null 2>&1 || need="$need mandoc"
# doveadm checks that our password hashes interoperate with Dovecot's.
command -v doveadm >/dev/null 2>&1 || need="$need dovecot-core"
# The outbound delivery tests deliver over LMTP into a throwaway Dovecot.
[ -x /usr/lib/dovecot/lmtp ] || need="$need dovecot-lmtpd"
# imapd with real clients (tests/tests/imapd_clients.rs): mbsync, and mutt under tmux.
command -v mbsync >/dev/null 2>&1 || need="$need isync"
command -v mutt >/dev/null 2>&1 || command -v neomutt >/dev/null 2>&1 || need="$need mutt"
command -v tmux >/dev/null 2>&1 || need="$need tmux"
# pop3d with real clients (tests/tests/pop3d.rs) and Dovecot's pop3 for bench/pop3.py.
command -v fetchmail >/dev/null 2>&1 || need="$need fetchmail"
command -v getmail6 >/dev/null 2>&1 || command -v getmail >/dev/null 2>&1 || need="$need getmail6"
[ -x /usr/lib/dovecot/pop3 ] || need="$need dovecot-pop3d"
# Network-namespace tests (two hosts) and a certificate for an IP address (TLS verify).
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
pkg-config --exists openssl 2>/dev/null || need="$need libssl-dev pkg-config"
# The Debian package (make deb, tests/tests/package.rs): dpkg-buildpackage and debhelper.
command -v dpkg-buildpackage >/dev/null 2>&1 || need="$need dpkg-dev"
command -v dh >/dev/null 2>&1 || need="$need debhelper"
command -v lintian >/dev/null 2>&1 || need="$need lintian"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: not root (or no apt-get): please install:$need (tests needing them skip)"
	exit 0
fi
echo "deps: installing$need"
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
# Debian's postfix and dovecot must not run as system services on a test machine.
if [ -x /usr/sbin/postfix ]; then
	postfix stop >/dev/null 2>&1 || true
	systemctl disable --now postfix >/dev/null 2>&1 || true
fi
# fetchmail's Debian package ships a (disabled) system daemon: keep it off.
systemctl disable --now fetchmail >/dev/null 2>&1 || true
if [ -x /usr/sbin/dovecot ]; then
	systemctl disable --now dovecot >/dev/null 2>&1 || true
	pkill -x dovecot >/dev/null 2>&1 || true
fi
