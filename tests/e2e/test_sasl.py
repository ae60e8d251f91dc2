"""test_sasl.py: SASL AUTH (RFC 5034) in poboxd: curl with AUTH=PLAIN,
AUTH=LOGIN and OAuth bearer tokens (a test verifier script), mpop with
SCRAM-SHA-256 (GNU SASL), raw exchanges over the harness Client and
poplib, SCRAM-SHA-256 and -PLUS over TLS (the client side computed here
from the ssl module's certificate and, for tls-exporter, openssl s_client's
keying material), cancel, bad base64, the cleartext rule on a non-loopback
address, the failure delay and the log's mech= field."""

import ast
import base64
import hashlib
import hmac
import json
import os
import poplib
import pwd
import re
import signal
import socket
import ssl
import subprocess
import time
import unittest
from pathlib import Path

from harness import (IS_ROOT, POBOXD, UNPRIV_USER, Client, Daemon, PoboxTestCase, free_port, need_tool,
                     non_loopback_ipv4, simple_message, uidl_of, wait_for)
from test_tls import capa, make_pki, starttls

PW = "sasl pass word"


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


class ScramClient:
    """RFC 5802 client side (stdlib hashlib/hmac), for exchanges no Debian
    client library drives here (-PLUS with a chosen binding)."""

    def __init__(self, user, password, sha="sha256", gs2="n,,", cb=b"",
                 nonce="e2eClientNonce"):
        self.user, self.password, self.sha = user, password, sha
        self.gs2, self.cb, self.nonce = gs2, cb, nonce
        self.bare = f"n={user},r={nonce}"

    def first(self):
        return self.gs2 + self.bare

    def final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(self.nonce), server_first
        salted = hashlib.pbkdf2_hmac(self.sha, self.password.encode(),
                                     base64.b64decode(attrs["s"]), int(attrs["i"]))
        ckey = hmac.new(salted, b"Client Key", self.sha).digest()
        stored = hashlib.new(self.sha, ckey).digest()
        without = f"c={b64(self.gs2.encode() + self.cb)},r={attrs['r']}"
        auth = f"{self.bare},{server_first},{without}".encode()
        sig = hmac.new(stored, auth, self.sha).digest()
        proof = bytes(a ^ b for a, b in zip(ckey, sig))
        skey = hmac.new(salted, b"Server Key", self.sha).digest()
        self.server_sig = hmac.new(skey, auth, self.sha).digest()
        return f"{without},p={b64(proof)}"

    def verify(self, server_final):
        return server_final == "v=" + b64(self.server_sig)


def challenge(line):
    """The decoded text of a "+ base64" line."""
    if not line.startswith("+ ") and line != "+":
        raise AssertionError(f"expected a challenge, got {line!r}")
    return base64.b64decode(line[2:]).decode()


def scram_exchange(c, mech, client):
    """Runs SCRAM over an open Client; returns the final reply line."""
    r = c.cmd(f"AUTH {mech} {b64(client.first())}")
    if not r.startswith("+ "):
        return r
    r = c.cmd(b64(client.final(challenge(r))))
    if not r.startswith("+ "):
        return r
    if not client.verify(challenge(r)):
        raise AssertionError("server signature does not verify")
    return c.cmd("")


def mpop_fetch(tc, port, auth, user="alice", pw=PW, tls="tls off\n"):
    """Runs mpop (keep mode, into a fresh Maildir) against tc's poboxd on
    port with SASL mechanism auth; returns the messages fetched."""
    mpop = need_tool(tc, "mpop")
    inbox = tc.env.cli / f"inbox-{auth}"
    for sub in ("cur", "new", "tmp"):
        (inbox / sub).mkdir(parents=True)
    rc = tc.env.cli / "mpoprc"
    rc.write_text(
        f"defaults\n{tls}timeout 15\nreceived_header off\n"
        f"uidls_file {tc.env.cli / 'uidls'}\n"
        f"account e2e\nhost 127.0.0.1\nport {port}\nuser {user}\n"
        f"password {pw}\nauth {auth}\n"
        f"delivery maildir {inbox}\nkeep on\n")
    os.chmod(rc, 0o600)
    r = subprocess.run([mpop, "-C", str(rc), "-Q", "e2e"], capture_output=True,
                       text=True, timeout=60)
    tc.assertEqual(r.returncode, 0, r.stdout + r.stderr)
    return [p.read_bytes() for p in (inbox / "new").iterdir()]


class SaslTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        self.msg = simple_message("sasl")
        self.env.add_user("alice", PW)
        self.uidl = uidl_of(self.env.deliver("alice", self.msg).name)

    def client(self, **kw):
        c = self.env.connect(**kw)
        self.addCleanup(c.close)
        return c

    # ------------------------------------------------------------ CAPA, AUTH
    def test_capa_and_plain(self):
        self.env.start()
        c = self.client()
        caps = dict((x.split(" ", 1) + [""])[:2] for x in
                    (l.upper() for l in capa_lines(c)))
        self.assertEqual(caps["SASL"].split(), ["SCRAM-SHA-256", "PLAIN", "LOGIN"])
        r = c.cmd("AUTH PLAIN " + b64(f"\0alice\0{PW}"))
        self.assertTrue(r.startswith("+OK"), r)
        size = len(self.msg.replace(b"\n", b"\r\n"))
        self.assertEqual(c.cmd("STAT"), f"+OK 1 {size}")
        # AUTH in TRANSACTION: -ERR.
        self.assertTrue(c.cmd("AUTH PLAIN").startswith("-ERR"))
        c.cmd("QUIT")
        ev = self.env.wait_event("login", user="alice")
        self.assertEqual(ev["method"], "sasl")
        self.assertEqual(ev["mech"], "PLAIN")
        self.env.wait_event("logout", user="alice", reason="quit")

    def test_plain_continuation_authzid_and_failures(self):
        self.env.start()
        c = self.client()
        self.assertEqual(c.cmd("AUTH PLAIN"), "+ ")
        self.assertTrue(c.cmd(b64(f"alice\0alice\0{PW}")).startswith("+OK"))
        c.cmd("QUIT")
        c = self.client()
        # Another authzid: refused.
        self.assertTrue(c.cmd("AUTH PLAIN " + b64(f"bob\0alice\0{PW}")).startswith("-ERR [AUTH]"))
        # Wrong password and unknown user: the same answer.
        self.assertTrue(c.cmd("AUTH PLAIN " + b64("\0alice\0nope")).startswith("-ERR [AUTH]"))
        self.assertTrue(c.cmd("AUTH PLAIN " + b64("\0nobody\0nope")).startswith("-ERR [AUTH]"))
        # "=" is an empty initial response: malformed for PLAIN.
        self.assertEqual(c.cmd("AUTH PLAIN ="), "-ERR Malformed authentication exchange")
        self.assertTrue(c.cmd("AUTH NOSUCH").startswith("-ERR"))
        self.assertTrue(c.cmd("AUTH PLAIN a b").startswith("-ERR"))
        reasons = [e["reason"] for e in self.env.events("login_failed")]
        self.assertEqual(reasons, ["authzid", "bad_password", "unknown_user", "malformed"])
        for e in self.env.events("login_failed"):
            self.assertEqual(e["mech"], "PLAIN")

    def test_cancel_and_bad_base64(self):
        self.env.start(max_bad_commands="3")
        c = self.client()
        self.assertEqual(c.cmd("AUTH LOGIN"), "+ " + b64("Username:"))
        self.assertEqual(c.cmd("*"), "-ERR Authentication cancelled")
        # The session goes on: a login works after a cancel.
        self.assertEqual(c.cmd("AUTH LOGIN " + b64("alice")), "+ " + b64("Password:"))
        self.assertEqual(c.cmd("*"), "-ERR Authentication cancelled")
        # Bad base64: -ERR, a failed attempt, a bad command.
        self.assertEqual(c.cmd("AUTH PLAIN !!!!"), "-ERR Malformed authentication exchange")
        self.assertEqual(c.cmd("AUTH LOGIN"), "+ " + b64("Username:"))
        self.assertEqual(c.cmd("YWxpY2U"), "-ERR Malformed authentication exchange")
        self.env.wait_event("login_failed", count=2, reason="malformed")
        # The third bad command closes the session.
        r = c.cmd("AUTH PLAIN Y W")
        self.assertIn("too many bad commands", r)
        self.assertTrue(c.is_closed())

    def test_long_continuation_line(self):
        self.env.start()
        c = self.client()
        self.assertEqual(c.cmd("AUTH PLAIN"), "+ ")
        # Over 255 octets is fine in a continuation...
        r = c.cmd(b64(f"\0alice\0{PW}" + "x" * 200))
        self.assertTrue(r.startswith("-ERR"), r)
        self.assertEqual(c.cmd("AUTH PLAIN"), "+ ")
        # ...up to 8 KiB.
        r = c.cmd("A" * 9000)
        self.assertEqual(r, "-ERR Malformed authentication exchange")
        self.assertTrue(c.cmd("NOOP").startswith("-ERR"))  # not logged in
        self.assertEqual(self.env.events("login_failed")[1]["reason"], "malformed")

    def test_long_continuation_in_pieces(self):
        """A 6 KiB continuation that arrives in small pieces is read whole
        (reading must not stop at the 4 KiB pipelining bound)."""
        self.env.start()
        c = self.client()
        self.assertEqual(c.cmd("AUTH PLAIN"), "+ ")
        line = b64(f"\0alice\0{PW}".encode() + b"\0" + b"x" * 4500) + "\r\n"
        self.assertGreater(len(line), 6000)
        for i in range(0, len(line), 500):
            c.send(line[i:i + 500])
            time.sleep(0.01)
        self.assertEqual(c.line(), "-ERR Malformed authentication exchange")

    def test_failure_delay_applies(self):
        self.env.start(auth_failure_delay="1")
        c = self.client()
        r = c.cmd("AUTH PLAIN " + b64("\0alice\0wrong"))
        self.assertTrue(r.startswith("-ERR [AUTH]"), r)
        c2 = self.client()
        sc = ScramClient("alice", "wrong")
        self.assertTrue(scram_exchange(c2, "SCRAM-SHA-256", sc).startswith("-ERR [AUTH]"))
        ev = self.env.events("login_failed")
        self.assertEqual([e["delay_ms"] for e in ev], ["1000", "2000"])
        self.assertEqual([e["mech"] for e in ev], ["PLAIN", "SCRAM-SHA-256"])

    def test_login_mech_with_poplib(self):
        self.env.start()
        p = poplib.POP3("127.0.0.1", self.env.port, timeout=10)
        self.assertTrue(p._shortcmd("AUTH LOGIN").startswith(b"+ "))
        self.assertTrue(p._shortcmd(b64("alice")).startswith(b"+ "))
        self.assertTrue(p._shortcmd(b64(PW)).startswith(b"+OK"))
        self.assertEqual(p.stat()[0], 1)
        p.quit()
        self.env.wait_event("login", user="alice", mech="LOGIN")

    # ------------------------------------------------------------ curl
    def test_curl_plain_and_login(self):
        curl = need_tool(self, "curl")
        self.env.start()
        for mech in ("PLAIN", "LOGIN"):
            with self.subTest(mech=mech):
                r = subprocess.run([curl, "-sS", "--max-time", "15", "--user",
                                    f"alice:{PW}", "--login-options", f"AUTH={mech}",
                                    f"pop3://127.0.0.1:{self.env.port}/1"],
                                   capture_output=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout, self.msg.replace(b"\n", b"\r\n"))
                self.env.wait_event("login", user="alice", mech=mech)

    # ------------------------------------------------------------ SCRAM
    def test_scram_sha256_raw(self):
        self.env.start()
        c = self.client()
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256",
                                       ScramClient("alice", PW)).startswith("+OK"))
        self.assertTrue(c.cmd("STAT").startswith("+OK 1 "))
        c.cmd("QUIT")
        self.env.wait_event("login", user="alice", mech="SCRAM-SHA-256")
        # Unknown users look alike: the same salt on every try.
        salts = []
        for _ in range(2):
            c = self.client()
            r = c.cmd("AUTH SCRAM-SHA-256 " + b64("n,,n=ghost,r=abc"))
            salts.append(re.search(r",s=([^,]+),i=4096$", challenge(r)).group(1))
            self.assertEqual(c.cmd("*"), "-ERR Authentication cancelled")
        self.assertEqual(salts[0], salts[1])
        # A wrong password, an unknown user: the same -ERR.
        c = self.client()
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256",
                                       ScramClient("alice", "nope")).startswith("-ERR [AUTH]"))
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256",
                                       ScramClient("ghost", "nope")).startswith("-ERR [AUTH]"))
        reasons = [e["reason"] for e in self.env.events("login_failed")]
        self.assertEqual(reasons, ["bad_password", "unknown_user"])

    def test_pobox_user_passwd_rekeys_scram(self):
        self.env.add_user_line("bob", "old pw", extra="apop=sekrit login_delay=0")
        self.env.pobox("user", "passwd", "bob", input="old pw\n", check=True)
        line = [l for l in self.env.passwd.read_text().splitlines()
                if l.startswith("bob:")][0]
        self.assertRegex(line, r"^bob:\$y\$[^:]+:[^:]+:apop=sekrit login_delay=0 "
                               r"scram-sha-256=SCRAM-SHA-256\$4096:[^ ]+$")
        d = self.env.start()
        c = self.client()
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256",
                                       ScramClient("bob", "old pw")).startswith("+OK"))
        c.cmd("QUIT")
        self.env.pobox("user", "passwd", "bob", input="new pw\n", check=True)
        line2 = [l for l in self.env.passwd.read_text().splitlines()
                 if l.startswith("bob:")][0]
        self.assertEqual(line2.count("scram-sha-256="), 1)
        self.assertIn("apop=sekrit login_delay=0 ", line2)
        self.env.fix_owner()
        # The file is re-read at most once a second: SIGHUP makes it certain.
        d.signal(signal.SIGHUP)
        self.env.wait_event("reloaded")
        c = self.client()
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256",
                                       ScramClient("bob", "old pw")).startswith("-ERR"))
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256",
                                       ScramClient("bob", "new pw")).startswith("+OK"))

    def test_scram_without_keys_and_disabled(self):
        self.env.add_user_line("nokeys", PW)
        self.env.add_user_line("gone", "x", extra="apop=sekrit")
        text = self.env.passwd.read_text().replace("gone:$", "gone:!$")
        self.env.passwd.write_text(text)
        self.env.fix_owner()
        self.env.start(sasl_mechanisms="SCRAM-SHA-256 CRAM-MD5 PLAIN")
        c = self.client()
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256",
                                       ScramClient("nokeys", PW)).startswith("-ERR [AUTH]"))
        # CRAM-MD5 with the apop= secret of a disabled entry: refused.
        r = c.cmd("AUTH CRAM-MD5")
        digest = hmac.new(b"sekrit", challenge(r).encode(), "md5").hexdigest()
        self.assertTrue(c.cmd(b64(f"gone {digest}")).startswith("-ERR [AUTH]"))
        reasons = [e["reason"] for e in self.env.events("login_failed")]
        self.assertEqual(reasons, ["no_scram_key", "disabled"])

    def test_cram_md5(self):
        self.env.add_user_line("mrose", "x", extra="apop=tanstaaf")
        self.env.deliver("mrose", self.msg)
        self.env.start(sasl_mechanisms="CRAM-MD5 PLAIN")
        c = self.client()
        self.assertEqual(dict_caps(c)["SASL"], "CRAM-MD5 PLAIN")
        r = c.cmd("AUTH CRAM-MD5")
        ch = challenge(r)
        self.assertRegex(ch, r"^<\d+\.\d+@.+>$")
        digest = hmac.new(b"tanstaaf", ch.encode(), "md5").hexdigest()
        self.assertTrue(c.cmd(b64(f"mrose {digest}")).startswith("+OK"))
        self.env.wait_event("login", user="mrose", mech="CRAM-MD5")

    def test_scram_sha1_only_when_configured(self):
        self.env.pobox("user", "passwd", "alice", "--scram-sha-1", input=PW + "\n",
                       check=True)
        self.env.start()
        c = self.client()
        self.assertTrue(c.cmd("AUTH SCRAM-SHA-1 " + b64("n,,n=alice,r=x")).startswith("-ERR"))
        self.env.daemons[-1].stop()
        self.env.start(sasl_mechanisms="SCRAM-SHA-1 SCRAM-SHA-256")
        c = self.client()
        self.assertEqual(dict_caps(c)["SASL"], "SCRAM-SHA-256 SCRAM-SHA-1")
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-1",
                                       ScramClient("alice", PW, sha="sha1")).startswith("+OK"))

    def run_mpop(self, auth, user="alice", pw=PW):
        return mpop_fetch(self, self.env.port, auth, user, pw)

    def test_mpop_scram_sha256(self):
        self.env.start()
        self.assertEqual(self.run_mpop("scram-sha-256"), [self.msg])
        self.env.wait_event("login", user="alice", method="sasl", mech="SCRAM-SHA-256")

    def test_mpop_scram_sha1_and_cram_md5(self):
        """GNU SASL's SCRAM-SHA-1 and CRAM-MD5 (both off by default)."""
        self.env.pobox("user", "passwd", "alice", "--scram-sha-1", input=PW + "\n",
                       check=True)
        self.env.add_user_line("mrose", "x", extra="apop=tanstaaf")
        self.env.deliver("mrose", self.msg)
        self.env.start(sasl_mechanisms="SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5")
        self.assertEqual(self.run_mpop("scram-sha-1"), [self.msg])
        self.env.wait_event("login", user="alice", mech="SCRAM-SHA-1")
        self.assertEqual(self.run_mpop("cram-md5", user="mrose", pw="tanstaaf"),
                         [self.msg])
        self.env.wait_event("login", user="mrose", mech="CRAM-MD5")

    def test_reload_changes_mechanisms(self):
        d = self.env.start()
        old = self.client()
        self.assertEqual(old.cmd("AUTH PLAIN"), "+ ")
        self.env.write_config(sasl_mechanisms="SCRAM-SHA-256")
        d.signal(signal.SIGHUP)
        self.env.wait_event("reloaded")
        # A running exchange finishes under the settings it started with.
        self.assertTrue(old.cmd(b64(f"\0alice\0{PW}")).startswith("+OK"))
        new = self.client()
        self.assertEqual(dict_caps(new)["SASL"], "SCRAM-SHA-256")
        self.assertTrue(new.cmd("AUTH PLAIN").startswith("-ERR"))
        # A bad list on SIGHUP keeps the running configuration.
        self.env.write_config(sasl_mechanisms="NOSUCH")
        d.signal(signal.SIGHUP)
        self.env.wait_event("reload_failed")
        self.assertEqual(dict_caps(self.client())["SASL"], "SCRAM-SHA-256")

    def test_config_checks(self):
        for value, why in (("PLAIN NOSUCH", "unknown mechanism 'NOSUCH'"),
                           ("EXTERNAL PLAIN", "EXTERNAL needs tls_client_ca"),
                           ("XOAUTH2", "XOAUTH2 needs oauth_verify_command"),
                           ("PLAIN,LOGIN", "'sasl_mechanisms' must be")):
            with self.subTest(value=value):
                self.env.write_config(sasl_mechanisms=value)
                r = subprocess.run([str(POBOXD), "-c", str(self.env.conf), "-t"],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn(why, r.stderr)
        self.env.write_config(sasl_mechanisms="none")
        self.env.start()
        c = self.client()
        self.assertNotIn("SASL", dict_caps(c))
        self.assertTrue(c.cmd("AUTH PLAIN").startswith("-ERR"))


def capa_lines(c):
    c.send("CAPA\r\n")
    r = c.line()
    if not r.startswith("+OK"):
        raise AssertionError(f"CAPA -> {r!r}")
    return c.multi()


def dict_caps(c):
    return dict((x.split(" ", 1) + [""])[:2] for x in capa_lines(c))


def make_client_cert(d, name, email=None, cn=None):
    """A client certificate signed by the test CA in d (make_pki first)."""
    from test_tls import openssl
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
    if email:
        ext += f"subjectAltName=email:{email}\n"
    (d / f"{name}.cnf").write_text(ext)
    openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn or name}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
            "-extfile", f"{name}.cnf", cwd=d)
    return d / f"{name}.crt", d / f"{name}.key"


class SaslTlsTest(PoboxTestCase):
    """Mechanisms that need TLS: SCRAM-*-PLUS with both binding types,
    EXTERNAL with a client certificate; and what CAPA says before and
    after STLS."""

    def setUp(self):
        super().setUp()
        need_tool(self, "openssl")
        self.tlsdir = self.env.srv / "tls"
        self.ca, self.cert, self.key = make_pki(self.tlsdir)
        self.ctx = ssl.create_default_context(cafile=str(self.ca))
        self.tls_port = free_port()
        self.msg = simple_message("sasl tls")
        self.env.add_user("alice", PW)
        self.env.deliver("alice", self.msg)

    def start(self, **settings):
        self.env.settings.update(tls_cert=str(self.cert), tls_key=str(self.key))
        self.env.extra_lines.append(f"tls_listen = 127.0.0.1:{self.tls_port}")
        return self.env.start(**settings)

    def pop3s(self, ctx=None):
        sock = (ctx or self.ctx).wrap_socket(
            socket.create_connection(("127.0.0.1", self.tls_port), 10),
            server_hostname="127.0.0.1")
        c = Client.__new__(Client)
        c.sock, c.rf = sock, sock.makefile("rb")
        self.addCleanup(c.close)
        greeting = c.line()
        self.assertTrue(greeting.startswith("+OK"), greeting)
        return c

    def test_capa_before_and_after_stls(self):
        self.start()
        c = self.env.connect()
        self.addCleanup(c.close)
        self.assertEqual(dict_caps(c)["SASL"], "SCRAM-SHA-256 PLAIN LOGIN")
        self.assertTrue(c.cmd("STLS").startswith("+OK"))
        starttls(c, self.ctx)
        self.assertEqual(dict_caps(c)["SASL"],
                         "SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN")
        # Over TLS the -PLUS variant with tls-server-end-point works.
        der = c.sock.getpeercert(binary_form=True)
        sc = ScramClient("alice", PW, gs2="p=tls-server-end-point,,",
                         cb=hashlib.sha256(der).digest())
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256-PLUS", sc).startswith("+OK"))
        self.env.wait_event("login", user="alice", mech="SCRAM-SHA-256-PLUS")

    def test_scram_plus_binding_rules(self):
        self.start()
        der = None
        # A wrong binding fails, as does 'y' when -PLUS was offered.
        c = self.pop3s()
        der = c.sock.getpeercert(binary_form=True)
        bad = ScramClient("alice", PW, gs2="p=tls-server-end-point,,",
                          cb=hashlib.sha256(der + b"x").digest())
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256-PLUS", bad).startswith("-ERR [AUTH]"))
        y = ScramClient("alice", PW, gs2="y,,")
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256", y).startswith("-ERR [AUTH]"))
        # Plain SCRAM without binding is still fine under TLS.
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256",
                                       ScramClient("alice", PW)).startswith("+OK"))
        reasons = [e["reason"] for e in self.env.events("login_failed")]
        self.assertEqual(reasons, ["channel_binding", "downgrade"])
        # In the clear, -PLUS is neither offered nor accepted.
        c = self.env.connect()
        self.addCleanup(c.close)
        self.assertNotIn("PLUS", dict_caps(c)["SASL"])
        self.assertTrue(c.cmd("AUTH SCRAM-SHA-256-PLUS").startswith("-ERR"))

    def test_scram_plus_tls_exporter_openssl(self):
        """tls-exporter (RFC 9266) with the keying material openssl
        s_client exports for the same label."""
        self.start()
        p = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{self.tls_port}",
             "-CAfile", str(self.ca), "-nocommands", "-keymatexport",
             "EXPORTER-Channel-Binding", "-keymatexportlen", "32"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1)
        self.addCleanup(p.kill)
        keymat, line = None, ""
        for _ in range(200):
            line = p.stdout.readline().strip()
            m = re.match(r"Keying material: ([0-9A-Fa-f]+)", line)
            if m:
                keymat = bytes.fromhex(m.group(1))
            if line.startswith("+OK"):
                break
        self.assertIsNotNone(keymat, "s_client printed no keying material")
        self.assertTrue(line.startswith("+OK"), line)

        def cmd(text):
            p.stdin.write(text + "\r\n")
            p.stdin.flush()
            return p.stdout.readline().strip()

        sc = ScramClient("alice", PW, gs2="p=tls-exporter,,", cb=keymat)
        r = cmd(f"AUTH SCRAM-SHA-256-PLUS {b64(sc.first())}")
        r = cmd(b64(sc.final(challenge(r))))
        self.assertTrue(sc.verify(challenge(r)), r)
        self.assertTrue(cmd("").startswith("+OK"))
        self.assertTrue(cmd("QUIT").startswith("+OK"))
        p.stdin.close()
        p.wait(10)
        self.env.wait_event("login", user="alice", mech="SCRAM-SHA-256-PLUS")

    def test_mpop_scram_over_tls(self):
        need_tool(self, "mpop")
        self.start()
        self.assertEqual(mpop_fetch(self, self.tls_port, "scram-sha-256",
                                    tls=f"tls on\ntls_starttls off\ntls_trust_file {self.ca}\n"),
                         [self.msg])
        ev = self.env.wait_event("login", user="alice", method="sasl")
        self.assertTrue(ev["mech"].startswith("SCRAM-SHA-256"), ev)

    def test_external_client_certificate(self):
        crt, key = make_client_cert(self.tlsdir, "alicecert", email="alice@example.org",
                                    cn="Alice Example")
        bobcrt, bobkey = make_client_cert(self.tlsdir, "bob", cn="bob")
        self.env.fix_owner()
        self.start(tls_client_ca=str(self.ca))
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(crt), str(key))
        c = self.pop3s(ctx)
        self.assertIn("EXTERNAL", dict_caps(c)["SASL"].split())
        # An authzid naming someone else fails; empty means the cert's user.
        self.assertTrue(c.cmd("AUTH EXTERNAL " + b64("bob")).startswith("-ERR [AUTH]"))
        self.assertTrue(c.cmd("AUTH EXTERNAL =").startswith("+OK"))
        self.assertTrue(c.cmd("STAT").startswith("+OK 1 "))
        self.env.wait_event("login", user="alice", mech="EXTERNAL")
        # No certificate: EXTERNAL fails. A certificate for a user that
        # is not in the passwd file (CN=bob): fails too.
        c = self.pop3s()
        self.assertTrue(c.cmd("AUTH EXTERNAL =").startswith("-ERR [AUTH]"))
        ctx2 = ssl.create_default_context(cafile=str(self.ca))
        ctx2.load_cert_chain(str(bobcrt), str(bobkey))
        c = self.pop3s(ctx2)
        self.assertTrue(c.cmd("AUTH EXTERNAL =").startswith("-ERR [AUTH]"))
        reasons = [e["reason"] for e in self.env.events("login_failed")]
        self.assertEqual(reasons, ["authzid", "no_client_cert", "unknown_user"])

    def test_external_checks_the_domain(self):
        """With local_domains set, a certificate's email maps to a user
        only in one of those domains (any case); one for alice at another
        domain is refused, without falling back to its CN."""
        here, _ = make_client_cert(self.tlsdir, "here", email="alice@Example.ORG",
                                   cn="x")
        away, _ = make_client_cert(self.tlsdir, "away", email="alice@elsewhere.example",
                                   cn="alice")
        # An email with no domain, or one spelled with a trailing dot, is
        # in none of them either: no CN fallback for those.
        bare, _ = make_client_cert(self.tlsdir, "bare", email="alice", cn="alice")
        dot, _ = make_client_cert(self.tlsdir, "dot", email="alice@example.org.",
                                  cn="alice")
        self.env.fix_owner()
        self.start(tls_client_ca=str(self.ca), local_domains="example.org")
        for crt, want in ((here, "+OK"), (away, "-ERR [AUTH]"), (bare, "-ERR [AUTH]"),
                          (dot, "-ERR [AUTH]")):
            ctx = ssl.create_default_context(cafile=str(self.ca))
            ctx.load_cert_chain(str(crt), str(crt.with_suffix(".key")))
            c = self.pop3s(ctx)
            r = c.cmd("AUTH EXTERNAL =")
            self.assertTrue(r.startswith(want), f"{crt.name}: {r}")
        self.env.wait_event("login", user="alice", mech="EXTERNAL")
        self.env.wait_event("client_cert_refused", reason="foreign_domain")
        self.assertEqual(len(self.env.events("login", user="alice")), 1)

    def test_external_untrusted_certificate_and_sni(self):
        """Only a certificate from tls_client_ca maps to a user, also when
        SNI switched the connection to another certificate's context."""
        from test_tls import make_pki, openssl
        crt, key = make_client_cert(self.tlsdir, "alicecert", cn="alice")
        # Same name, not signed by the CA.
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", "selfalice.key", "-out", "selfalice.crt",
                "-days", "2", "-subj", "/CN=alice", cwd=self.tlsdir)
        _, mail_cert, mail_key = make_pki(self.tlsdir, "mail", "DNS:mail.example.org")
        self.env.extra_lines.append(f"tls_sni = mail.example.org {mail_cert} {mail_key}")
        self.env.fix_owner()
        self.start(tls_client_ca=str(self.ca))

        def attempt(certfile, keyfile, sni):
            ctx = ssl.create_default_context(cafile=str(self.ca))
            ctx.check_hostname = False
            ctx.load_cert_chain(str(certfile), str(keyfile))
            sock = ctx.wrap_socket(
                socket.create_connection(("127.0.0.1", self.tls_port), 10),
                server_hostname=sni)
            c = Client.__new__(Client)
            c.sock, c.rf = sock, sock.makefile("rb")
            self.addCleanup(c.close)
            self.assertTrue(c.line().startswith("+OK"))
            leaf = ssl.PEM_cert_to_DER_cert((self.tlsdir / "mail.crt").read_text())
            # SNI picked the other certificate.
            self.assertEqual(sock.getpeercert(True) == leaf, sni == "mail.example.org")
            r = c.cmd("AUTH EXTERNAL =")
            c.cmd("QUIT")
            return r

        self_crt, self_key = self.tlsdir / "selfalice.crt", self.tlsdir / "selfalice.key"
        for sni in ("localhost", "mail.example.org"):
            with self.subTest(sni=sni):
                self.assertTrue(attempt(self_crt, self_key, sni).startswith("-ERR [AUTH]"))
                self.assertTrue(attempt(crt, key, sni).startswith("+OK"))
                self.env.wait_event("login", user="alice", mech="EXTERNAL")
        reasons = [e["reason"] for e in self.env.events("login_failed")]
        self.assertEqual(reasons, ["no_client_cert", "no_client_cert"])

    def test_scram_plus_end_point_follows_sni(self):
        """tls-server-end-point is the hash of the certificate SNI chose
        (RFC 5929 §4.1), here ECDSA with SHA-256."""
        _, mail_cert, mail_key = make_pki(self.tlsdir, "mail", "DNS:mail.example.org")
        self.env.extra_lines.append(f"tls_sni = mail.example.org {mail_cert} {mail_key}")
        self.env.fix_owner()
        self.start()
        for sni in ("localhost", "mail.example.org"):
            with self.subTest(sni=sni):
                ctx = ssl.create_default_context(cafile=str(self.ca))
                sock = ctx.wrap_socket(
                    socket.create_connection(("127.0.0.1", self.tls_port), 10),
                    server_hostname=sni)
                c = Client.__new__(Client)
                c.sock, c.rf = sock, sock.makefile("rb")
                self.addCleanup(c.close)
                self.assertTrue(c.line().startswith("+OK"))
                der = sock.getpeercert(binary_form=True)
                sc = ScramClient("alice", PW, gs2="p=tls-server-end-point,,",
                                 cb=hashlib.sha256(der).digest())
                self.assertTrue(scram_exchange(c, "SCRAM-SHA-256-PLUS", sc).startswith("+OK"))
                c.cmd("QUIT")
                self.env.wait_event("logout", user="alice", count=1 if sni == "localhost" else 2)

    def test_cleartext_plain_refused_non_loopback(self):
        ip = non_loopback_ipv4()
        if ip is None:
            self.skipTest("no non-loopback IPv4 address on this host")
        port = free_port()
        self.env.listen.append(f"{ip}:{port}")
        self.start(cleartext_auth="loopback")
        c = Client(port, host=ip)
        self.addCleanup(c.close)
        self.assertEqual(dict_caps(c)["SASL"], "SCRAM-SHA-256")
        r = c.cmd("AUTH PLAIN " + b64(f"\0alice\0{PW}"))
        self.assertTrue(r.startswith("-ERR [AUTH] Cleartext"), r)
        self.assertTrue(c.cmd("AUTH LOGIN").startswith("-ERR [AUTH] Cleartext"))
        # SCRAM sends no password: allowed in the clear.
        self.assertTrue(scram_exchange(c, "SCRAM-SHA-256",
                                       ScramClient("alice", PW)).startswith("+OK"))
        c = Client(port, host=ip)
        self.addCleanup(c.close)
        self.assertTrue(c.cmd("STLS").startswith("+OK"))
        starttls(c, self.ctx)
        self.assertIn("PLAIN", dict_caps(c)["SASL"].split())


VERIFIER = """#!/bin/sh
# Test OAuth verifier: the token on stdin, the user on stdout.
read -r token
case "$token" in
good-token) echo alice; exit 0 ;;
liar-token) echo alice; exit 1 ;;
slow-token) sleep 30 ;;
*) exit 1 ;;
esac
"""


class SaslOAuthTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        self.msg = simple_message("oauth")
        self.env.add_user("alice", PW)
        self.env.deliver("alice", self.msg)
        v = self.env.srv / "verify-token"
        v.write_text(VERIFIER)
        os.chmod(v, 0o755)
        self.env.start(oauth_verify_command=str(v), oauth_verify_timeout="2")

    def test_capa(self):
        c = self.env.connect()
        self.addCleanup(c.close)
        self.assertEqual(dict_caps(c)["SASL"],
                         "SCRAM-SHA-256 OAUTHBEARER XOAUTH2 PLAIN LOGIN")

    def test_curl_oauth2_bearer(self):
        curl = need_tool(self, "curl")

        def fetch(token):
            return subprocess.run([curl, "-sS", "--max-time", "15", "--user", "alice:",
                                   "--oauth2-bearer", token,
                                   f"pop3://127.0.0.1:{self.env.port}/1"],
                                  capture_output=True, timeout=30)

        r = fetch("bad-token")
        self.assertNotEqual(r.returncode, 0)
        self.env.wait_event("login_failed", user="alice", reason="bad_token",
                            mech="OAUTHBEARER")
        for mech in ("OAUTHBEARER", "XOAUTH2"):
            with self.subTest(mech=mech):
                if mech == "XOAUTH2":
                    # curl takes OAUTHBEARER whenever it is offered.
                    self.env.daemons[-1].stop()
                    self.env.start(sasl_mechanisms="XOAUTH2 PLAIN")
                r = fetch("good-token")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout, self.msg.replace(b"\n", b"\r\n"))
                self.env.wait_event("login", user="alice", mech=mech)

    def test_oauthbearer_error_dance(self):
        c = self.env.connect()
        self.addCleanup(c.close)
        r = c.cmd("AUTH OAUTHBEARER " + b64("n,a=alice,\x01auth=Bearer bad-token\x01\x01"))
        err = json.loads(challenge(r))
        self.assertEqual(err["status"], "invalid_token")
        self.assertTrue(c.cmd(b64("\x01")).startswith("-ERR [AUTH]"))
        # A name on stdout does not count without exit status 0.
        r = c.cmd("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer liar-token\x01\x01"))
        self.assertTrue(r.startswith("+ "), r)
        self.assertEqual(json.loads(challenge(r))["status"], "401")
        self.assertTrue(c.cmd("").startswith("-ERR [AUTH]"))
        # The token names another user than the authzid.
        r = c.cmd("AUTH OAUTHBEARER " + b64("n,a=bob,\x01auth=Bearer good-token\x01\x01"))
        self.assertTrue(r.startswith("+ "), r)
        self.assertTrue(c.cmd(b64("\x01")).startswith("-ERR [AUTH]"))
        # A verifier over its time limit: a temporary failure.
        r = c.cmd("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer slow-token\x01\x01"))
        self.assertTrue(r.startswith("-ERR [SYS/TEMP]"), r)
        r = c.cmd("AUTH OAUTHBEARER " + b64("n,,\x01auth=Bearer good-token\x01\x01"))
        self.assertTrue(r.startswith("+OK"), r)
        reasons = [e["reason"] for e in self.env.events("login_failed")]
        self.assertEqual(reasons, ["bad_token", "bad_token", "authzid"])
        self.env.wait_event("login_tempfail", reason="oauth_verifier")


    def test_single_process(self):
        """--single-process: the verifier role runs in the worker, on
        threads of its own, the same code: good, bad and slow tokens."""
        self.env.daemons[-1].stop()
        if IS_ROOT:
            serv = pwd.getpwnam(UNPRIV_USER)
            os.chown(self.env.passwd, serv.pw_uid, serv.pw_gid)
        # Not env.start: it would give the passwd file back to auth.
        d = Daemon(self.env, ("--single-process",))
        self.env.daemons.append(d)
        d.wait_ready()
        c = self.env.connect()
        self.addCleanup(c.close)
        r = c.cmd("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer slow-token\x01\x01"))
        self.assertTrue(r.startswith("-ERR [SYS/TEMP]"), r)
        r = c.cmd("AUTH OAUTHBEARER " + b64("n,,\x01auth=Bearer bad-token\x01\x01"))
        self.assertEqual(json.loads(challenge(r))["status"], "invalid_token")
        self.assertTrue(c.cmd(b64("\x01")).startswith("-ERR [AUTH]"))
        r = c.cmd("AUTH OAUTHBEARER " + b64("n,,\x01auth=Bearer good-token\x01\x01"))
        self.assertTrue(r.startswith("+OK"), r)
        self.assertEqual(d.roles()["oauth"], [])

    @unittest.skipUnless(IS_ROOT, "file permissions bind only below root")
    def test_config_check_runs_verifier_as_login_user(self):
        """poboxd -t: the verifier runs as login_user, who must be able
        to execute it."""
        v = self.env.srv / "verify-private"
        v.write_text(VERIFIER)
        os.chown(v, 0, 0)
        os.chmod(v, 0o700)
        self.env.write_config(oauth_verify_command=str(v))
        os.chown(v, 0, 0)
        r = subprocess.run([str(POBOXD), "-c", str(self.env.conf), "-t"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"cannot run oauth_verify_command {v}", r.stderr)
        os.chmod(v, 0o755)
        r = subprocess.run([str(POBOXD), "-c", str(self.env.conf), "-t"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_token_is_a_whole_line(self):
        """docs/sasl.md promises the token as one line: a verifier that
        insists on its newline (read's status) accepts it."""
        v = self.env.srv / "verify-strict"
        v.write_text("#!/bin/sh\nread -r token || exit 3\n"
                     "[ \"$token\" = good-token ] && echo alice\n")
        os.chmod(v, 0o755)
        self.env.fix_owner()
        self.env.daemons[-1].stop()
        self.env.start(oauth_verify_command=str(v))
        c = self.env.connect()
        self.addCleanup(c.close)
        r = c.cmd("AUTH OAUTHBEARER " + b64("n,,\x01auth=Bearer good-token\x01\x01"))
        self.assertTrue(r.startswith("+OK"), r)

    def test_session_gone_while_verifier_runs(self):
        """A client that leaves while its token is being checked: the
        verifier's end finds no session, and poboxd goes on."""
        for mech, msg in (("XOAUTH2", "user=alice\x01auth=Bearer slow-token\x01\x01"),
                          ("OAUTHBEARER", "n,,\x01auth=Bearer good-token\x01\x01")):
            c = self.env.connect()
            c.send(f"AUTH {mech} {b64(msg)}\r\nQUIT\r\n")
            c.close()
        # The slow one runs (it sleeps 30 s) until its 2 s limit kills it,
        # and it is reaped.
        pid = verifier_parent(self.env.daemons[-1])
        for _ in range(100):
            if children(pid):
                break
            time.sleep(0.01)
        self.assertNotEqual(children(pid), [])
        kids = ["?"]
        for _ in range(200):
            kids = children(pid)
            if not kids:
                break
            time.sleep(0.05)
        self.assertEqual(kids, [])
        self.assertTrue(self.env.daemons[-1].alive())
        c = self.env.connect()
        self.addCleanup(c.close)
        r = c.cmd("AUTH OAUTHBEARER " + b64("n,,\x01auth=Bearer good-token\x01\x01"))
        self.assertTrue(r.startswith("+OK"), r)

    def test_verifier_gets_no_fds_env_or_zombies(self):
        """The verifier sees stdin, stdout, stderr and nothing else of
        poboxd: no sockets, a bare environment; it is reaped."""
        # It runs as login_user, who may write nothing of ours.
        outdir = self.env.srv / "verifier-out"
        outdir.mkdir()
        out = outdir / "verifier-view"
        v = self.env.srv / "verify-probe"
        v.write_text("#!/usr/bin/python3 -I\n"
                     "import os, sys\n"
                     "fds = []\n"
                     "for f in os.listdir('/proc/self/fd'):\n"
                     "    try:\n"
                     "        fds.append((f, os.readlink('/proc/self/fd/' + f)))\n"
                     "    except OSError:\n"
                     "        pass\n"
                     f"open('{out}.fd', 'w').write(repr(fds))\n"
                     f"open('{out}.env', 'w').write('\\n'.join(\n"
                     "    k + '=' + v for k, v in os.environ.items()))\n"
                     "if sys.stdin.readline().strip() == 'probe-token':\n"
                     "    print('alice')\n")
        os.chmod(v, 0o755)
        self.env.fix_owner()
        os.chmod(outdir, 0o1777)
        self.env.daemons[-1].stop()
        self.env.start(oauth_verify_command=str(v))
        c = self.env.connect()
        self.addCleanup(c.close)
        r = c.cmd("AUTH OAUTHBEARER " + b64("n,,\x01auth=Bearer probe-token\x01\x01"))
        self.assertTrue(r.startswith("+OK"), r + self.env.log_text()[-2000:])
        fds = dict(ast.literal_eval(Path(str(out) + ".fd").read_text()))
        extra = {f: t for f, t in fds.items() if f not in ("0", "1", "2")}
        self.assertEqual(extra, {})
        self.assertTrue(fds["0"].startswith("pipe:") and fds["1"].startswith("pipe:"), fds)
        env = Path(str(out) + ".env").read_text().split("\n")
        self.assertIn("PATH=/usr/local/bin:/usr/bin:/bin", env)
        self.assertFalse([e for e in env if e.startswith(("HOME=", "USER=", "POBOX"))], env)
        pid = verifier_parent(self.env.daemons[-1])
        kids = children(pid)
        states = [Path(f"/proc/{k}/stat").read_text().split()[2] for k in kids]
        self.assertNotIn("Z", states)



def verifier_parent(d):
    """The process that runs the verifiers: poboxd-oauth (of the serving
    worker with --single-process)."""
    return wait_for(lambda: d.roles()["oauth"] or d.roles()["worker"],
                    "the verifier process")[0]


def children(pid):
    """The child processes of every thread of pid (the verifier is spawned
    from a hashing thread)."""
    kids = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += (t / "children").read_text().split()
        except OSError:
            pass
    return kids


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SaslJwksTest(PoboxTestCase):
    """OAUTHBEARER/XOAUTH2 with JWT tokens checked against a JWKS file: an
    RSA key and signatures made by the openssl CLI."""

    def setUp(self):
        super().setUp()
        need_tool(self, "openssl")
        self.msg = simple_message("jwt")
        self.env.add_user("alice", PW)
        self.env.deliver("alice", self.msg)
        self.key = self.env.cli / "jwt.key"
        r = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                            "rsa_keygen_bits:2048", "-out", str(self.key)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = subprocess.run(["openssl", "rsa", "-in", str(self.key), "-noout", "-modulus"],
                           capture_output=True, text=True, timeout=60)
        n = bytes.fromhex(r.stdout.strip().split("=", 1)[1])
        jwks = {"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
                          "n": b64url(n), "e": b64url((65537).to_bytes(3, "big"))}]}
        self.jwks = self.env.srv / "jwks.json"
        self.jwks.write_text(json.dumps(jwks))
        self.env.start(oauth_jwks_file=str(self.jwks), oauth_issuer="https://idp.test",
                       oauth_audience="pobox")

    def token(self, **claims):
        body = {"iss": "https://idp.test", "aud": "pobox", "sub": "alice",
                "exp": int(time.time()) + 300}
        body.update(claims)
        head = b64url(json.dumps({"alg": "RS256", "kid": "k1"}).encode())
        signing_input = f"{head}.{b64url(json.dumps(body).encode())}"
        r = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                           input=signing_input.encode(), capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return f"{signing_input}.{b64url(r.stdout)}"

    def test_curl_with_jwt(self):
        curl = need_tool(self, "curl")
        r = subprocess.run([curl, "-sS", "--max-time", "15", "--user", "alice:",
                            "--oauth2-bearer", self.token(),
                            f"pop3://127.0.0.1:{self.env.port}/1"],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, self.msg.replace(b"\n", b"\r\n"))
        self.env.wait_event("login", user="alice", mech="OAUTHBEARER")

    def test_config_rules(self):
        for over, why in (({"oauth_issuer": ""}, "oauth_jwks_file needs"),
                          ({"oauth_verify_command": "/bin/true"}, "excludes"),
                          ({"oauth_jwks_file": str(self.env.passwd)}, "oauth_jwks_file:")):
            with self.subTest(over=over):
                self.env.write_config(**over)
                r = subprocess.run([str(POBOXD), "-c", str(self.env.conf), "-t"],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn(why, r.stderr)
                self.env.write_config(oauth_issuer="https://idp.test",
                                      oauth_verify_command="",
                                      oauth_jwks_file=str(self.jwks))

    def test_rejected_tokens(self):
        c = self.env.connect()
        self.addCleanup(c.close)
        for tok, why in ((self.token(exp=int(time.time()) - 3600), "jwt_expired"),
                         (self.token(aud="other"), "jwt_audience"),
                         (self.token(iss="https://evil.test"), "jwt_issuer"),
                         (self.token()[:-4] + "AAAA", "jwt_signature")):
            # A JWT does not fit the 255-octet command line: no initial
            # response (RFC 5034 §4), the token in a continuation line.
            self.assertEqual(c.cmd("AUTH XOAUTH2"), "+ ")
            r = c.cmd(b64(f"user=alice\x01auth=Bearer {tok}\x01\x01"))
            self.assertTrue(r.startswith("+ "), r)
            self.assertTrue(c.cmd("").startswith("-ERR [AUTH]"))
            self.env.wait_event("login_failed", reason=why)
        self.assertEqual(c.cmd("AUTH XOAUTH2"), "+ ")
        r = c.cmd(b64(f"user=alice\x01auth=Bearer {self.token()}\x01\x01"))
        self.assertTrue(r.startswith("+OK"), r)


if __name__ == "__main__":
    unittest.main()
