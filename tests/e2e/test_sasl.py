"""test_sasl.py: SASL AUTH (RFC 5034) in poboxd: curl with AUTH=PLAIN,
AUTH=LOGIN and OAuth bearer tokens (a test verifier script), mpop with
SCRAM-SHA-256 (GNU SASL), raw exchanges over the harness Client and
poplib, SCRAM-SHA-256 and -PLUS over TLS (the client side computed here
from the ssl module's certificate and, for tls-exporter, openssl s_client's
keying material), cancel, bad base64, the cleartext rule on a non-loopback
address, the failure delay and the log's mech= field."""

import base64
import hashlib
import hmac
import os
import poplib
import re
import subprocess
import unittest

from harness import (Client, PoboxTestCase, free_port, need_tool,
                     non_loopback_ipv4, simple_message, uidl_of)
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

    def test_mpop_scram_sha256(self):
        mpop = need_tool(self, "mpop")
        self.env.start()
        inbox = self.env.cli / "inbox"
        for sub in ("cur", "new", "tmp"):
            (inbox / sub).mkdir(parents=True)
        rc = self.env.cli / "mpoprc"
        rc.write_text(
            "defaults\ntls off\ntimeout 15\nreceived_header off\n"
            f"uidls_file {self.env.cli / 'uidls'}\n"
            f"account e2e\nhost 127.0.0.1\nport {self.env.port}\nuser alice\n"
            f"password {PW}\nauth scram-sha-256\n"
            f"delivery maildir {inbox}\nkeep on\n")
        os.chmod(rc, 0o600)
        r = subprocess.run([mpop, "-C", str(rc), "-Q", "e2e"], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        got = [p.read_bytes() for p in (inbox / "new").iterdir()]
        self.assertEqual(got, [self.msg])
        self.env.wait_event("login", user="alice", method="sasl", mech="SCRAM-SHA-256")


def capa_lines(c):
    c.send("CAPA\r\n")
    r = c.line()
    if not r.startswith("+OK"):
        raise AssertionError(f"CAPA -> {r!r}")
    return c.multi()


def dict_caps(c):
    return dict((x.split(" ", 1) + [""])[:2] for x in capa_lines(c))


if __name__ == "__main__":
    unittest.main()
