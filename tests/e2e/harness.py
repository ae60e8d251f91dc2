"""harness.py: end-to-end test helpers for pobox (stdlib only).

Each test gets its own temporary environment under /tmp (config, passwd
file made with `pobox user add`, maildirs), starts the real poboxd in the
foreground on free loopback ports with its log on a file, and talks to it
with real clients or the raw socket Client below. Only processes started
here are ever signalled, by their pid.
"""

import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("POBOX_BUILD", REPO / "build"))
if not BUILD.is_absolute():
    BUILD = REPO / BUILD
POBOXD = BUILD / "bin" / "poboxd"
POBOX = BUILD / "bin" / "pobox"

IS_ROOT = os.geteuid() == 0
CI = os.environ.get("CI", "").lower() == "true"
UNPRIV_USER = "nobody"
# Privilege separation: the auth process's user, the only one that reads
# the passwd file (made here when missing, like a package would).
AUTH_USER = "pobox-auth"
LOGIN_USER = "pobox-login"
KEEP = os.environ.get("E2E_KEEP") == "1"   # keep temp dirs for debugging
TIMEOUT = 10.0

SANITIZER_MARKERS = ("runtime error:", "ERROR: AddressSanitizer",
                     "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer")

# Test id -> environments it created, so run.py can show the daemon log
# of a failing test.
ENVS_BY_TEST = {}


# ---------------------------------------------------------------- messages

def crlf(data):
    """Stored octets as RFC 1939 octets: a LF not after CR becomes CRLF."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def wire_body(data):
    """What a client sees after un-dot-stuffing RETR: CRLF line ends and a
    final CRLF even when the stored message has no final newline."""
    body = crlf(data)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


def dot_stuff(body):
    """RFC 1939 §3 byte-stuffing of a CRLF body whose lines all end in CRLF."""
    out = []
    for line in body.split(b"\r\n")[:-1] if body else []:
        out.append((b"." + line if line.startswith(b".") else line) + b"\r\n")
    return b"".join(out)


def wire_retr(data):
    """The exact multi-line RETR payload after the +OK line."""
    return dot_stuff(wire_body(data)) + b".\r\n"


def wire_top(data, n):
    """Unstuffed TOP msg n body: header, the empty line, n body lines."""
    lines = wire_body(data).split(b"\r\n")[:-1]
    out, i = [], 0
    while i < len(lines):
        out.append(lines[i])
        i += 1
        if out[-1] == b"":
            break
    out += lines[i:i + n]
    return b"".join(line + b"\r\n" for line in out)


def sized_message(size, tag="msg"):
    """A LF-ended RFC 5322 message whose CRLF size is exactly size octets."""
    head = (f"From: sender@example.org\nTo: user@example.org\n"
            f"Subject: {tag}\n\n").encode()
    base = len(crlf(head))
    if size < base + 2:
        raise ValueError("size too small")
    left = size - base
    lines = []
    while left > 0:
        n = min(60, left - 2)
        if left - (n + 2) == 1:   # one octet cannot be filled
            n -= 1
        lines.append(b"x" * n + b"\n")
        left -= n + 2
    body = b"".join(lines)
    msg = head + body
    assert len(crlf(msg)) == size, (len(crlf(msg)), size)
    return msg


def simple_message(subject, body="Hello.\n", extra_headers=""):
    return (f"Return-Path: <sender@example.org>\n"
            f"From: Sender <sender@example.org>\n"
            f"To: User <user@example.org>\n"
            f"Subject: {subject}\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>\n"
            f"Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
            f"{extra_headers}"
            f"MIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=utf-8\n"
            f"Content-Transfer-Encoding: 8bit\n"
            f"\n{body}").encode("utf-8")


def uidl_of(filename):
    """Maildir UIDL: the file name up to the first ',' or ':'."""
    return re.split(r"[,:]", filename, 1)[0]


def uidl_digest(uidls):
    """Same as maildrop_uidl_digest(): sha256 of "uidl\\n"..., 8 octets hex."""
    h = hashlib.sha256()
    for u in uidls:
        h.update(u.encode() + b"\n")
    return h.hexdigest()[:16]


def apop_digest(greeting, secret):
    m = re.search(r"<[^>]*>", greeting)
    if m is None:
        raise AssertionError(f"no APOP timestamp in greeting {greeting!r}")
    return hashlib.md5((m.group(0) + secret).encode()).hexdigest()


# ---------------------------------------------------------------- network

_handed_out = set()


def free_port(family=socket.AF_INET):
    """A TCP port free on the loopback address of family."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port")


def ipv6_loopback_ok():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def non_loopback_ipv4():
    """An IPv4 address of this host that is not 127/8, or None."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True,
                             text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    for a in out:
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", a) and not a.startswith("127."):
            try:
                with socket.socket() as s:
                    s.bind((a, 0))
                return a
            except OSError:
                continue
    return None


def listening(port):
    """True when some socket is in LISTEN state on port (/proc/net/tcp*).
    Used instead of connecting so readiness leaves no session in the log."""
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(f).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A" and \
                    int(parts[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


class ProtocolError(AssertionError):
    pass


class Client:
    """A raw POP3 client: bytes in, lines out, no interpretation."""

    def __init__(self, port, host="127.0.0.1", timeout=TIMEOUT, greeting=True):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.rf = self.sock.makefile("rb")
        self.greeting = self.line() if greeting else None

    def close(self):
        try:
            self.rf.close()
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def rawline(self):
        """One line as received, with its line end; EOF raises."""
        line = self.rf.readline()
        if not line:
            raise ProtocolError("connection closed by server")
        if not line.endswith(b"\r\n"):
            raise ProtocolError(f"line without CRLF: {line!r}")
        return line

    def line(self):
        return self.rawline()[:-2].decode("latin-1")

    def cmd(self, text):
        """Sends one command line and returns the status line."""
        self.send(text.encode("latin-1") + b"\r\n")
        return self.line()

    def ok(self, text):
        r = self.cmd(text)
        if not r.startswith("+OK"):
            raise ProtocolError(f"{text!r} -> {r!r}")
        return r

    def multi_raw(self):
        """The raw octets of a multi-line body up to and incl. '.CRLF'."""
        out = []
        while True:
            line = self.rawline()
            out.append(line)
            if line == b".\r\n":
                return b"".join(out)

    def multi(self):
        """A multi-line body, un-dot-stuffed, as a list of str lines."""
        raw = self.multi_raw()
        return [ln[1:] if ln.startswith(".") else ln
                for ln in raw[:-3].decode("latin-1").split("\r\n")[:-1]]

    def login(self, user, password):
        r = self.cmd(f"USER {user}")
        if not r.startswith("+OK"):
            raise ProtocolError(f"USER -> {r!r}")
        r = self.cmd(f"PASS {password}")
        if not r.startswith("+OK"):
            raise ProtocolError(f"PASS -> {r!r}")
        return r

    def read_all(self, timeout=TIMEOUT):
        """Everything until the server closes the connection."""
        self.sock.settimeout(timeout)
        data = b""
        while True:
            chunk = self.rf.read1(65536)
            if not chunk:
                return data
            data += chunk

    def is_closed(self, timeout=TIMEOUT):
        """True when the server closes the connection within timeout; what
        it sent before closing is kept in self.trailing."""
        self.sock.settimeout(timeout)
        self.trailing = b""
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                chunk = self.rf.read1(65536)
                if not chunk:
                    return True
                self.trailing += chunk
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True
        return False


# ---------------------------------------------------------------- logs

_KV = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_line(line):
    d = {}
    for k, v in _KV.findall(line):
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = v[1:-1]
        d.setdefault(k, v)
    d["_line"] = line
    return d


# ---------------------------------------------------------------- environment

DEFAULT_SETTINGS = {
    "cleartext_auth": "loopback",
    "apop": "no",
    "implementation": "pobox-e2e",
    "login_delay": "0",
    "expire": "never",
    "idle_timeout": "600",
    "login_timeout": "60",
    "max_bad_commands": "20",
    "max_sessions": "50",
    "max_sessions_per_ip": "30",
    "auth_failure_delay": "0",
    "auth_workers": "2",
    # One serving process, so per-process counts and limits are exact;
    # test_workers.py runs several.
    "workers": "1",
    "log_level": "info",
}


def need_binaries():
    for b in (POBOXD, POBOX):
        if not os.access(b, os.X_OK):
            raise AssertionError(f"{b} is missing: build with `make` first")


def need_tool(testcase, tool):
    """A missing client tool skips the test, or fails it when CI=true."""
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} is not installed (scripts/deps installs it)"
        if CI:
            testcase.fail(msg)
        testcase.skipTest(msg)
    return path


def _unpriv_ids():
    pw = pwd.getpwnam(UNPRIV_USER)
    return pw.pw_uid, pw.pw_gid


def ensure_auth_user():
    """As root, the users of the auth and login processes."""
    if not IS_ROOT:
        return
    for name in (AUTH_USER, LOGIN_USER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home",
                            "--home-dir", "/nonexistent", "--shell",
                            "/usr/sbin/nologin", name], check=False,
                           capture_output=True)


def own_passwd(path):
    """As root, the passwd file goes to the auth user alone (0600): the
    serving processes must not be able to read it."""
    if not IS_ROOT or not os.path.exists(path):
        return
    pw = pwd.getpwnam(AUTH_USER)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, 0o600)


def chown_tree(path):
    """As root, hands path over to the unprivileged user poboxd drops to."""
    if not IS_ROOT:
        return
    uid, gid = _unpriv_ids()
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), uid, gid)


def quote(v):
    """A config value, quoted when it holds spaces or '#'."""
    v = str(v)
    return f'"{v}"' if re.search(r"[\s#\"]", v) or v == "" else v


class Env:
    """A temporary pobox installation: srv/ (config, passwd, mail; owned by
    the unprivileged user when root) and cli/ (client side files)."""

    _seq = 0

    def __init__(self, test_id="e2e"):
        need_binaries()
        ensure_auth_user()
        self.dir = Path(tempfile.mkdtemp(prefix="pobox-e2e-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.srv = self.dir / "srv"
        self.cli = self.dir / "cli"
        self.srv.mkdir()
        self.cli.mkdir(mode=0o700)
        self.conf = self.srv / "poboxd.conf"
        self.passwd = self.srv / "passwd"
        self.mail_root = self.srv / "mail"
        self.mail_root.mkdir()
        self.log_path = self.dir / "poboxd.log"
        self.port = free_port()
        self.listen = [f"127.0.0.1:{self.port}"]
        self.settings = dict(DEFAULT_SETTINGS)
        self.extra_lines = []
        self.daemons = []
        self.ts = int(time.time()) - 100000
        ENVS_BY_TEST.setdefault(test_id, []).append(self)

    # ---- config
    def config_text(self):
        lines = ["# pobox e2e test configuration"]
        lines += [f"listen = {a}" for a in self.listen]
        if IS_ROOT:
            lines.append(f"user = {UNPRIV_USER}")
            lines.append(f"auth_user = {AUTH_USER}")
            lines.append(f"login_user = {LOGIN_USER}")
        lines.append(f"passwd_file = {self.passwd}")
        lines.append(f"mail_root = {self.mail_root}")
        lines += [f"{k} = {quote(v)}" for k, v in self.settings.items()]
        lines += self.extra_lines
        return "\n".join(lines) + "\n"

    def write_config(self, **overrides):
        self.settings.update({k: str(v) for k, v in overrides.items()})
        self.conf.write_text(self.config_text())
        chown_tree(self.srv)
        own_passwd(self.passwd)
        return self.conf

    # ---- pobox admin tool
    def pobox(self, *args, input=None, check=False):
        if not self.conf.exists():
            self.write_config()
        r = subprocess.run([str(POBOX), "-c", str(self.conf), *args],
                           input=input, capture_output=True, text=True,
                           timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"pobox {' '.join(args)} failed "
                                 f"({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def add_user(self, name, password):
        self.pobox("user", "add", name, input=password + "\n", check=True)
        self.fix_owner()
        return self.maildir(name)

    def add_user_line(self, name, password, extra="", maildir=None, create=True):
        """A passwd line written by hand: name:hash:maildir:extra."""
        h = crypt_hash(password)
        md = maildir if maildir is not None else self.mail_root / name
        for sub in ("cur", "new", "tmp") if create else ():
            (Path(md) / sub).mkdir(parents=True, exist_ok=True)
        with open(self.passwd, "a") as f:
            f.write(f"{name}:{h}:{md}:{extra}\n")
        self.fix_owner()
        return Path(md)

    def fix_owner(self):
        chown_tree(self.srv)
        own_passwd(self.passwd)

    # ---- maildirs
    def maildir(self, user):
        return self.mail_root / user

    def deliver(self, user, data, folder="new", ts=None, sizes=True,
                flags="S", mtime=None, name=None):
        """Writes a message file (tmp/ then rename) and returns its path.
        Timestamps increase with each call unless ts is given."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        Env._seq += 1
        if ts is None:
            self.ts += 10
            ts = self.ts
        md = self.maildir(user)
        if name is None:
            name = f"{ts}.M{Env._seq}P{os.getpid()}.e2ehost"
            if sizes:
                name += f",S={len(data)},W={len(crlf(data))}"
            if folder == "cur":
                name += ":2," + flags
        tmp = md / "tmp" / name
        tmp.write_bytes(data)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        if IS_ROOT:
            uid, gid = _unpriv_ids()
            os.chown(tmp, uid, gid)
        dst = md / folder / name
        os.rename(tmp, dst)
        return dst

    def messages(self, user):
        """{uidl: bytes} of the messages in cur/ and new/ on disk."""
        out = {}
        for sub in ("new", "cur"):
            d = self.maildir(user) / sub
            if d.is_dir():
                for p in d.iterdir():
                    out[uidl_of(p.name)] = p.read_bytes()
        return out

    # ---- daemon
    def start(self, args=(), wait=True, write=True, prefix=(), **overrides):
        """Writes the config (self.listen, self.settings and overrides)
        unless write is false, and starts poboxd -f (through prefix, a
        command that execs it, e.g. setpriv)."""
        if write or not self.conf.exists():
            self.write_config(**overrides)
        self.fix_owner()
        d = Daemon(self, args, prefix)
        self.daemons.append(d)
        if wait:
            d.wait_ready()
        return d

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def events(self, event=None, **match):
        out = []
        for line in self.log_text().splitlines():
            d = parse_log_line(line)
            if event is not None and d.get("event") != event:
                continue
            if all(d.get(k) == str(v) for k, v in match.items()):
                out.append(d)
        return out

    def wait_event(self, event, timeout=TIMEOUT, count=1, **match):
        """Waits until count log lines with event (and fields) exist."""
        end = time.monotonic() + timeout
        while True:
            ev = self.events(event, **match)
            if len(ev) >= count:
                return ev[count - 1]
            if time.monotonic() > end:
                raise AssertionError(
                    f"no log line event={event} {match} within {timeout}s; "
                    f"log:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)

    def cleanup(self):
        for d in self.daemons:
            d.kill()
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, **kw):
        return Client(self.port, **kw)


def crypt_hash(password):
    """A SHA512-CRYPT hash for hand-written passwd lines."""
    r = subprocess.run(["openssl", "passwd", "-6", "-stdin"],
                       input=password + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"openssl passwd failed: {r.stderr}")
    return r.stdout.strip()


class Daemon:
    """One poboxd -f process started by this harness."""

    def __init__(self, env, args=(), prefix=()):
        self.env = env
        self.logf = open(env.log_path, "ab")
        cmd = [*prefix, str(POBOXD), "-f", "-c", str(env.conf), *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf,
                                     start_new_session=True)
        self.pid = self.proc.pid

    def ports(self):
        return [int(a.rsplit(":", 1)[1]) for a in self.env.listen]

    def wait_ready(self, timeout=TIMEOUT):
        end = time.monotonic() + timeout
        ports = self.ports()
        seen = None
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"poboxd exited with {rc} at start; log:\n"
                                     f"{self.env.log_text()[-4000:]}")
            if all(listening(p) for p in ports):
                # Ready once it logged its listeners (a missing
                # event=listening line is tested on its own).
                seen = seen or time.monotonic()
                if len(self.env.events("listening")) >= len(ports) or \
                        time.monotonic() - seen > 1.0:
                    return
            if time.monotonic() > end:
                raise AssertionError("poboxd not listening after "
                                     f"{timeout}s; log:\n{self.env.log_text()}")
            time.sleep(0.02)

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, timeout=TIMEOUT):
        """SIGTERM and wait; returns the exit status (SIGKILL on timeout)."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"poboxd did not exit {timeout}s after SIGTERM")

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        if not self.logf.closed:
            self.logf.close()

    def proc_status(self, pid=None):
        """{key: value} of /proc/PID/status (default: the daemon's)."""
        return proc_status(self.pid if pid is None else pid)

    def roles(self):
        """{"auth": [pids], "login": [pids], "mail": [pids], "oauth":
        [pids], "worker": [pids]}: the daemon's children by name
        (poboxd-auth, poboxd-login, poboxd-mail, poboxd-oauth: the OAuth
        verifier; "worker" is every serving process: login and mail, or
        the whole workers of --single-process); with no children
        (--single-process, one worker) the daemon is every role but auth."""
        out = {"auth": [], "login": [], "mail": [], "oauth": [], "worker": []}
        for pid in child_pids(self.pid):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            role = {"poboxd-auth": "auth", "poboxd-login": "login",
                    "poboxd-mail": "mail", "poboxd-oauth": "oauth"}.get(comm)
            if role is not None:
                out[role].append(pid)
            if role not in ("auth", "oauth"):
                out["worker"].append(pid)
        if not out["auth"] and not out["worker"]:
            out["worker"] = out["login"] = out["mail"] = [self.pid]
        elif not out["login"] and not out["mail"]:
            # --single-process with several workers: each is whole.
            out["login"] = out["mail"] = list(out["worker"])
        return out

    def worker_pids(self, count=1, timeout=TIMEOUT, role="worker"):
        """The serving processes of role, once count of them run."""
        end = time.monotonic() + timeout
        while True:
            w = self.roles()[role]
            if len(w) >= count:
                return w
            if time.monotonic() > end:
                raise AssertionError(f"{count} {role} processes not running")
            time.sleep(0.05)


def proc_status(pid):
    """{key: value} of /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def wait_for(cond, what, timeout=10):
    """cond()'s first true value, polled every 50 ms for up to timeout s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def child_pids(pid):
    """PIDs whose parent is pid."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, split after ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(p.name))
    return sorted(out)


class PoboxTestCase(unittest.TestCase):
    """Gives each test an Env (self.env) that is cleaned up afterwards."""

    maxDiff = None

    def setUp(self):
        self.env = Env(self.id())
        self.addCleanup(self.env.cleanup)

    def tearDown(self):
        # Every test ends with a clean SIGTERM exit and a log free of
        # sanitizer reports (for SANITIZE=address,undefined builds).
        for env in ENVS_BY_TEST.get(self.id(), []):
            for d in env.daemons:
                if d.alive():
                    rc = d.stop()
                    self.assertEqual(rc, 0, "poboxd exit status after SIGTERM")
            log = env.log_text()
            for marker in SANITIZER_MARKERS:
                at = log.find(marker)
                if at >= 0:
                    start = log.rfind("\n", 0, at) + 1
                    self.fail(f"sanitizer report in the poboxd log:\n"
                              f"{log[start:start + 1500]}")

    def new_env(self):
        env = Env(self.id())
        self.addCleanup(env.cleanup)
        return env

    def assertFilesEqual(self, env, user, expected):
        """The maildir holds exactly the messages {uidl: bytes}."""
        self.assertEqual(sorted(env.messages(user)), sorted(expected))
        for u, data in env.messages(user).items():
            self.assertEqual(data, expected[u], f"content of {u} changed")
