"""test_fetch_dovecot.py: `pobox fetch` against Dovecot's POP3 server, the
second real server: started here on loopback ports with its own config
dir (as root; skipped otherwise), stopped by its pid. Every login
mechanism Dovecot offers, the automatic choice, STLS and implicit TLS,
keep mode, and SIGKILLs at random moments."""

import os
import random
import shutil
import signal
import subprocess
import time
import unittest

from harness import (IS_ROOT, CI, POBOX, PoboxTestCase, free_port, listening,
                     simple_message, sized_message, UNPRIV_USER)
from test_fetch import local_messages
from test_tls import make_pki

PW = "dove-pass"
DOVECOT = "/usr/sbin/dovecot"


def scram_sha256(password, iterations=4096):
    """Dovecot's stored form of a SCRAM-SHA-256 verifier (no password):
    {SCRAM-SHA-256}iter,salt,StoredKey,ServerKey in base64."""
    import base64, hashlib, hmac
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    ck = hmac.new(salted, b"Client Key", "sha256").digest()
    sk = hmac.new(salted, b"Server Key", "sha256").digest()
    b = lambda x: base64.b64encode(x).decode()
    return (f"{{SCRAM-SHA-256}}{iterations},{b(salt)},"
            f"{b(hashlib.sha256(ck).digest())},{b(sk)}")


class Dovecot:
    """A Dovecot master started by this test (pop3 only)."""

    def __init__(self, env, tls):
        import pwd
        self.dir = env.dir / "dovecot"
        self.mail = self.dir / "mail"
        for d in ("run", "state", "mail"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        self.port, self.tls_port = free_port(), free_port()
        pw = pwd.getpwnam(UNPRIV_USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        (self.dir / "passwd").write_text(f"alice:{{PLAIN}}{PW}::::::\n"
                                         f"bob:{scram_sha256(PW)}::::::\n")
        ca, cert, key = tls
        self.conf = self.dir / "dovecot.conf"
        self.conf.write_text(f"""# Dovecot POP3 for test_fetch_dovecot.py
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5 apop scram-sha-1 scram-sha-256
auth_failure_delay = 0
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.dir}/passwd
}}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={self.mail}/%u
}}
mail_location = maildir:{self.mail}/%u
pop3_lock_session = yes
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {self.tls_port}
  }}
}}
service anvil {{
  chroot =
}}
""")
        self.out = open(self.dir / "dovecot.out", "ab")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)],
                                     stdout=self.out, stderr=self.out,
                                     start_new_session=True)
        end = time.monotonic() + 15
        while not (listening(self.port) and listening(self.tls_port)):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError("dovecot did not start: " + self.log())
            time.sleep(0.05)

    def log(self):
        text = ""
        for f in ("dovecot.log", "dovecot.out"):
            try:
                text += (self.dir / f).read_text(errors="replace")
            except OSError:
                pass
        return text[-3000:]

    def deliver(self, msgs, user="alice"):
        md = self.mail / user
        for sub in ("cur", "new", "tmp"):
            (md / sub).mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(msgs):
            name = f"{int(time.time())}.M{i}P{os.getpid()}R{random.random()}.dv"
            (md / "tmp" / name).write_bytes(m)
            os.rename(md / "tmp" / name, md / "new" / name)
        for root, dirs, files in os.walk(self.mail):
            for n in dirs + files + ["."]:
                os.chown(os.path.join(root, n), self.uid, self.gid)

    def count(self, user="alice"):
        md = self.mail / user
        return sum(len(os.listdir(md / s)) for s in ("cur", "new") if (md / s).is_dir())

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.out.close()


@unittest.skipUnless(IS_ROOT or CI, "Dovecot is started as root")
class FetchDovecotTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        if not os.access(DOVECOT, os.X_OK):
            msg = "dovecot-pop3d is not installed (scripts/deps installs it)"
            if CI:
                self.fail(msg)
            self.skipTest(msg)
        self.ca, cert, key = make_pki(self.env.dir / "tls")
        self.dv = Dovecot(self.env, (self.ca, cert, key))
        self.addCleanup(self.dv.stop)
        self.inbox = self.env.cli / "inbox"
        self.state = self.env.cli / "state"
        self.pwfile = self.env.cli / "password"
        self.pwfile.write_text(PW + "\n")
        os.chmod(self.pwfile, 0o600)
        self.msgs = [simple_message("dove one"),
                     simple_message("dove dots", ".x\n..\n.\nend\n"),
                     simple_message("dove big", "y" * 5000 + "\n" * 3000)]
        self.dv.deliver(self.msgs)

    def fetch_args(self, *extra, tls="none", port=None):
        args = [str(POBOX), "fetch", "--host", "127.0.0.1",
                "--port", str(port or self.dv.port), "--user", "alice",
                "--tls", tls, "--password-file", str(self.pwfile),
                "--state-dir", str(self.state), "--timeout", "10",
                "--maildir", str(self.inbox)]
        if tls == "none":
            args.append("--allow-cleartext")
        return args + list(extra)

    def fetch(self, *extra, **kw):
        return subprocess.run(self.fetch_args(*extra, **kw), capture_output=True,
                              text=True, timeout=120)

    def test_each_mechanism(self):
        for mech in ("user", "plain", "login", "cram-md5", "apop", "scram-sha-1",
                     "scram-sha-256"):
            with self.subTest(mech=mech):
                r = self.fetch("--keep", "--auth", mech, "-v", "--account", mech)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn(f"with {mech.upper()}", r.stderr)
        self.assertEqual(local_messages(self.inbox), sorted(self.msgs * 7))
        self.assertEqual(self.dv.count(), 3)

    def test_auto_mechanism(self):
        # Without TLS and without cleartext allowed: SCRAM-SHA-256 (Dovecot
        # 2.3 offers no -PLUS) is chosen.
        args = [a for a in self.fetch_args("-v") if a != "--allow-cleartext"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("with SCRAM-SHA-256", r.stderr)
        self.assertEqual(local_messages(self.inbox), sorted(self.msgs))
        self.assertEqual(self.dv.count(), 0)

    def test_bad_password(self):
        self.pwfile.write_text("wrong\n")
        r = self.fetch()
        self.assertEqual(r.returncode, 77, r.stderr)
        self.assertIn("SCRAM-SHA-256", r.stderr)
        r = self.fetch("--auth", "cram-md5")
        self.assertEqual(r.returncode, 77, r.stderr)
        self.assertEqual(self.dv.count(), 3)

    def test_scram_stored_verifier(self):
        """bob's passdb entry holds only SCRAM-SHA-256 keys: SCRAM logs in
        (under TLS with gs2 "y", Dovecot 2.3 having no -PLUS)."""
        self.dv.deliver(self.msgs[:1], user="bob")
        for tls, port in (("none", None), ("implicit", self.dv.tls_port)):
            with self.subTest(tls=tls):
                args = self.fetch_args("-v", "--cafile", str(self.ca), tls=tls,
                                       port=port)
                args[args.index("--user") + 1] = "bob"
                args[args.index("--state-dir") + 1] += "-" + tls
                args = [a for a in args if a != "--allow-cleartext"]
                r = subprocess.run(args, capture_output=True, text=True, timeout=60)
                self.assertIn(r.returncode, (0, 1), r.stderr)
                self.assertIn("with SCRAM-SHA-256", r.stderr)
        self.assertEqual(local_messages(self.inbox), self.msgs[:1])
        self.assertEqual(self.dv.count("bob"), 0)

    def test_stls_and_implicit(self):
        r = self.fetch("--keep", "--cafile", str(self.ca), "--auth", "plain", tls="stls")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(local_messages(self.inbox), sorted(self.msgs))
        self.dv.deliver([simple_message("dove late")])
        r = self.fetch("--cafile", str(self.ca), "-v", tls="implicit",
                       port=self.dv.tls_port)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(local_messages(self.inbox)), 4)
        self.assertEqual(self.dv.count(), 0)

    def test_sigkill(self):
        rng = random.Random(11)
        total = list(self.msgs)
        for trial in range(10):
            batch = [sized_message(rng.randint(500, 30000), f"dk {trial} {i}")
                     for i in range(30)]
            self.dv.deliver(batch)
            total += batch
            p = subprocess.Popen(self.fetch_args(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.01, 0.4))
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait(30)
            local = local_messages(self.inbox)
            self.assertEqual(len(local), len(set(local)), "stored twice")
            self.assertGreaterEqual(len(local) + self.dv.count(), len(total))
        # Dovecot may still hold the killed session's lock a moment.
        for _ in range(50):
            r = self.fetch()
            if r.returncode in (0, 1):
                break
            time.sleep(0.2)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        self.assertEqual(local_messages(self.inbox), sorted(total))
        self.assertEqual(self.dv.count(), 0)


if __name__ == "__main__":
    unittest.main()
