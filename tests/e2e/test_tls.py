"""test_tls.py: TLS in poboxd: STLS (RFC 2595) and implicit TLS (RFC 8314)
with a throwaway CA made by the openssl CLI, driven by Python's poplib and
ssl, curl and openssl s_client; the STARTTLS injection class; cleartext
USER before and after STLS on a non-loopback address."""

import os
import poplib
import select
import signal
import socket
import ssl
import struct
import subprocess
import unittest

import time

from harness import (POBOXD, TIMEOUT, Client, PoboxTestCase, crlf, free_port, need_tool,
                     non_loopback_ipv4, simple_message, sized_message,
                     uidl_of, wire_retr)

PW = "tls pass word"


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)}: {r.stderr}")


def make_pki(d, name="srv", san="IP:127.0.0.1,DNS:localhost"):
    """A CA and a server certificate for san (127.0.0.1 and localhost) in d.
    Returns (ca, cert chain, key) paths."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    if not (d / "ca.pem").exists():
        openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
                "-days", "2", "-subj", "/CN=pobox test CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    (d / "ext.cnf").write_text(
        f"subjectAltName={san}\n"
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
            "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.crt",
            "-days", "2", "-extfile", "ext.cnf", cwd=d)
    # The chain file: the leaf, then the CA.
    (d / f"{name}.pem").write_bytes((d / f"{name}.crt").read_bytes() +
                                    (d / "ca.pem").read_bytes())
    return d / "ca.pem", d / f"{name}.pem", d / f"{name}.key"


def starttls(c, ctx, hostname="127.0.0.1"):
    """Upgrades a harness Client after a +OK to STLS."""
    c.rf.close()
    c.sock = ctx.wrap_socket(c.sock, server_hostname=hostname)
    c.rf = c.sock.makefile("rb")
    return c


def capa(c):
    c.send("CAPA\r\n")
    r = c.line()
    if not r.startswith("+OK"):
        raise AssertionError(f"CAPA -> {r!r}")
    return [x.split()[0].upper() for x in c.multi()]


class TlsPipe:
    """A TLS client over ssl.SSLObject and memory BIOs on a raw socket, so
    a test decides what goes on the wire: application data, a TLS
    close_notify, a TCP half-close, in any order."""

    def __init__(self, port, ctx, hostname="localhost", sock=None):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), TIMEOUT)
        self.sock.settimeout(TIMEOUT)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=hostname)
        for _ in range(100):
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if data:
            self.inc.write(data)
        else:
            self.inc.write_eof()
        return data

    def write(self, data):
        self.obj.write(data)
        self._flush()

    def close_notify(self):
        """Sends our close_notify; we may still read (TLS 1.3 half-close)."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()

    def read_all(self):
        """Everything until the server ends the TLS stream. Returns (data,
        how): how is "close_notify" or "eof" (TCP FIN without it)."""
        got = b""
        for _ in range(100000):
            try:
                chunk = self.obj.read(65536)
                if not chunk:
                    return got, "close_notify"
                got += chunk
                continue
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return got, "close_notify"
            except ssl.SSLEOFError:
                return got, "eof"
            self._fill()
        raise AssertionError("read_all: no end")

    def close(self):
        self.sock.close()


class SClient:
    """openssl s_client driven line by line: each line goes once the reply
    to the last is in, so its command letters (k, K: TLS 1.3 key updates;
    R: a TLS 1.2 renegotiation) run between POP3 commands. POP3 lines
    must not start with one of them (or Q): lower case is fine."""

    def __init__(self, args):
        self.p = subprocess.Popen(["openssl", "s_client", *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = b""

    def expect(self, text, timeout=TIMEOUT, since=0):
        """Output until text appears after offset since (True), or the
        client ends (False)."""
        end = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while text.encode() not in self.out[since:]:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} from s_client: {self.out[-800:]!r}")
            if not select.select([fd], [], [], left)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return False
            self.out += chunk
        return True

    def line(self, text, expect=None):
        """Sends text; with expect, waits for it in what comes after."""
        since = len(self.out)
        try:
            self.p.stdin.write(text.encode() + b"\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            return False
        return expect is None or self.expect(expect, since=since)

    def close(self):
        try:
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.p.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.p.stdout.close()
        return self.out.decode(errors="replace")


class TlsTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        need_tool(self, "openssl")
        self.ca, self.cert, self.key = make_pki(self.env.srv / "tls")
        self.ctx = ssl.create_default_context(cafile=str(self.ca))
        self.tls_port = free_port()

    def start(self, tls_listen=True, **settings):
        self.env.settings.update(tls_cert=str(self.cert), tls_key=str(self.key))
        if tls_listen:
            self.env.extra_lines.append(f"tls_listen = 127.0.0.1:{self.tls_port}")
        self.daemon = self.env.start(**settings)
        return self.daemon

    def alice(self, msgs=()):
        self.env.add_user("alice", PW)
        return [uidl_of(self.env.deliver("alice", m).name) for m in msgs]

    # ------------------------------------------------------------ clients
    def test_poplib_stls(self):
        self.alice([simple_message("one")])
        self.start()
        p = poplib.POP3("127.0.0.1", self.env.port, timeout=10)
        caps = p.capa()
        self.assertIn("STLS", caps)
        p.stls(context=self.ctx)
        caps = p.capa()
        self.assertNotIn("STLS", caps)
        self.assertIn("USER", caps)
        p.user("alice")
        p.pass_(PW)
        self.assertEqual(p.stat()[0], 1)
        p.quit()
        ev = self.env.wait_event("tls")
        self.assertIn(ev["version"], ("TLSv1.2", "TLSv1.3"))
        self.assertTrue(ev["cipher"])
        self.env.wait_event("logout", user="alice", reason="quit")

    def test_poplib_pop3s(self):
        m = simple_message("implicit")
        self.alice([m])
        self.start()
        p = poplib.POP3_SSL("127.0.0.1", self.tls_port, context=self.ctx, timeout=10)
        self.assertTrue(p.getwelcome().startswith(b"+OK"))
        caps = p.capa()
        self.assertNotIn("STLS", caps)
        self.assertIn("USER", caps)
        p.user("alice")
        p.pass_(PW)
        resp, lines, _ = p.retr(1)
        self.assertEqual(b"\r\n".join(lines) + b"\r\n",
                         m.replace(b"\n", b"\r\n"))
        # STLS inside TLS: -ERR (here also after login).
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("STLS")
        p.quit()
        self.env.wait_event("logout", user="alice", reason="quit")
        conn = self.env.events("connect", tls="yes")
        self.assertEqual(len(conn), 1)

    def test_stls_twice_and_in_pop3s(self):
        self.alice()
        self.start()
        c = self.env.connect()
        self.addCleanup(c.close)
        self.assertEqual(c.cmd("STLS"), "+OK Begin TLS negotiation")
        starttls(c, self.ctx)
        self.assertTrue(c.cmd("STLS").startswith("-ERR"))
        c.login("alice", PW)
        self.assertTrue(c.cmd("STLS").startswith("-ERR"))
        s = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.tls_port), 10),
                                 server_hostname="localhost")
        self.addCleanup(s.close)
        f = s.makefile("rb")
        self.assertTrue(f.readline().startswith(b"+OK"))
        s.sendall(b"STLS\r\n")
        self.assertTrue(f.readline().startswith(b"-ERR"))
        f.close()

    def test_curl_pop3s_and_stls(self):
        curl = need_tool(self, "curl")
        m = simple_message("curl tls")
        self.alice([m])
        self.start()
        for url, extra in ((f"pop3s://127.0.0.1:{self.tls_port}/1", []),
                           (f"pop3://127.0.0.1:{self.env.port}/1", ["--ssl-reqd"])):
            with self.subTest(url=url):
                r = subprocess.run([curl, "-sS", "--max-time", "15", "--cacert",
                                    str(self.ca), "--user", f"alice:{PW}", *extra, url],
                                   capture_output=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout, m.replace(b"\n", b"\r\n"))
        self.env.wait_event("tls", count=2)
        self.env.wait_event("logout", user="alice", count=2)

    def test_openssl_s_client(self):
        self.alice()
        self.start(tls_listen=False)
        r = subprocess.run(["openssl", "s_client", "-starttls", "pop3", "-connect",
                            f"127.0.0.1:{self.env.port}", "-CAfile", str(self.ca),
                            "-verify_return_error", "-brief"],
                           input="CAPA\r\nQUIT\r\n", capture_output=True, text=True,
                           timeout=30)
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        self.assertRegex(out, r"Protocol version: TLSv1\.[23]")
        self.assertIn("Verification: OK", out)
        self.env.wait_event("tls")

    def test_old_tls_refused(self):
        self.alice()
        self.start()
        for args in (["-starttls", "pop3", "-connect", f"127.0.0.1:{self.env.port}"],
                     ["-connect", f"127.0.0.1:{self.tls_port}"]):
            with self.subTest(args=args):
                # SECLEVEL=0 so the refusal is the server's, not the client's.
                r = subprocess.run(["openssl", "s_client", "-tls1_1", "-cipher",
                                    "DEFAULT@SECLEVEL=0", *args],
                                   input="", capture_output=True, text=True,
                                   timeout=30)
                self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        ev = self.env.wait_event("tls_failed", count=2)
        self.assertIn("unsupported protocol", ev["error"])
        self.assertEqual(ev.get("session") and
                         self.env.events("logout", session=ev["session"])[0]["reason"],
                         "tls_handshake_failed")
        self.assertEqual(self.env.events("tls"), [])

    def test_tls13_minimum(self):
        self.alice()
        self.start(tls_min_version="TLSv1.3")
        ctx12 = ssl.create_default_context(cafile=str(self.ca))
        ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
        with self.assertRaises(ssl.SSLError):
            poplib.POP3_SSL("127.0.0.1", self.tls_port, context=ctx12, timeout=10)
        p = poplib.POP3_SSL("127.0.0.1", self.tls_port, context=self.ctx, timeout=10)
        p.quit()
        self.assertEqual(self.env.wait_event("tls")["version"], "TLSv1.3")

    # ------------------------------------------------------------ security
    def test_stls_injection_discarded(self):
        self.alice()
        self.start()
        c = self.env.connect()
        self.addCleanup(c.close)
        # One packet: whatever follows STLS was sent in the clear.
        c.send("STLS\r\nCAPA\r\n")
        self.assertEqual(c.line(), "+OK Begin TLS negotiation")
        # Had the CAPA been answered in the clear, the handshake would
        # read it as a broken record and fail.
        starttls(c, self.ctx)
        caps = capa(c)
        self.assertIn("USER", caps)
        self.assertNotIn("STLS", caps)
        # The next reply is QUIT's: no CAPA answered inside TLS either.
        self.assertEqual(c.cmd("QUIT"), "+OK Bye")
        ev = self.env.wait_event("logout")
        self.assertEqual(ev["commands"], "3", "STLS, CAPA, QUIT")

    def test_cleartext_user_non_loopback(self):
        ip = non_loopback_ipv4()
        if ip is None:
            self.skipTest("no non-loopback IPv4 address on this host")
        self.alice([simple_message("x")])
        port = free_port()
        self.env.listen.append(f"{ip}:{port}")
        self.start(cleartext_auth="loopback")
        c = Client(port, host=ip)
        self.addCleanup(c.close)
        caps = capa(c)
        self.assertNotIn("USER", caps)
        self.assertIn("STLS", caps)
        r = c.cmd("USER alice")
        self.assertTrue(r.startswith("-ERR [AUTH]"), r)
        self.assertEqual(c.cmd("STLS"), "+OK Begin TLS negotiation")
        starttls(c, self.ctx, hostname="localhost")
        caps = capa(c)
        self.assertIn("USER", caps)
        c.login("alice", PW)
        self.assertTrue(c.cmd("STAT").startswith("+OK 1 "))
        c.cmd("QUIT")
        self.env.wait_event("login", user="alice")

    def test_no_cert_no_stls(self):
        self.alice()
        self.env.start()
        c = self.env.connect()
        self.addCleanup(c.close)
        self.assertNotIn("STLS", capa(c))
        r = c.cmd("STLS")
        self.assertTrue(r.startswith("-ERR"), r)
        c.login("alice", PW)

    # ------------------------------------------------------------ limits
    def test_pop3s_refused_without_handshake(self):
        """A POP3S client over a session limit is closed before the
        handshake: no clear-text -ERR (RFC 8314), no TLS work."""
        self.alice()
        for limit in ("max_sessions_per_ip", "max_sessions"):
            with self.subTest(limit=limit):
                env = self.new_env()
                env.add_user("alice", PW)
                port = free_port()
                env.settings.update(tls_cert=str(self.cert), tls_key=str(self.key))
                env.extra_lines.append(f"tls_listen = 127.0.0.1:{port}")
                env.start(**{limit: "1"})
                # The one allowed session holds the slot.
                held = Client(port, greeting=False)
                self.addCleanup(held.close)
                starttls(held, self.ctx, hostname="localhost")
                self.assertTrue(held.line().startswith("+OK"))
                env.wait_event("tls")
                # A client that says nothing: the server sends not a byte
                # and closes.
                quiet = socket.create_connection(("127.0.0.1", port), 10)
                self.addCleanup(quiet.close)
                try:
                    self.assertEqual(quiet.recv(100), b"")
                except ConnectionResetError:
                    pass
                # A TLS client: the handshake ends in EOF or a reset.
                # SSLEOFError, a reset or a broken pipe; not a timeout.
                with self.assertRaises(OSError) as cm:
                    self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10),
                                         server_hostname="localhost").close()
                self.assertNotIsInstance(cm.exception, TimeoutError)
                ev = env.wait_event("refused", count=2)
                self.assertEqual(ev["reason"], limit)
                self.assertEqual(ev["tls"], "yes")
                self.assertEqual(ev["action"], "close")
                refused = {e["session"] for e in env.events("refused")}
                self.assertEqual(len(refused), 2)
                # Neither got as far as TLS or a POP3 session.
                self.assertEqual(len(env.events("tls")), 1)
                self.assertEqual(env.events("tls_failed"), [])
                self.assertFalse(refused & {e["session"] for e in env.events("logout")})
                # The held session still works; the plain port still
                # answers -ERR [SYS/TEMP] in the clear.
                self.assertTrue(held.cmd("CAPA").startswith("+OK"))
                held.multi()
                plain = Client(env.port)
                self.addCleanup(plain.close)
                self.assertTrue(plain.greeting.startswith("-ERR [SYS/TEMP]"), plain.greeting)
                self.assertTrue(held.cmd("QUIT").startswith("+OK"))
                env.wait_event("logout", reason="quit")
                # The slot is free again: a new POP3S client gets in.
                c = Client(port, greeting=False)
                self.addCleanup(c.close)
                starttls(c, self.ctx, hostname="localhost")
                self.assertTrue(c.line().startswith("+OK"))
                c.login("alice", PW)

    # ------------------------------------------------------------ data
    def test_stalled_handshake_times_out(self):
        """login_timeout runs from connect, through the handshake: a POP3S
        client that sends nothing, or half a ClientHello, is closed then,
        and nothing is written in the clear."""
        self.alice()
        self.start(login_timeout="10")
        silent = socket.create_connection(("127.0.0.1", self.tls_port), 10)
        self.addCleanup(silent.close)
        # The first octets of a real ClientHello, then nothing.
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = self.ctx.wrap_bio(inc, out, server_hostname="localhost")
        with self.assertRaises(ssl.SSLWantReadError):
            obj.do_handshake()
        hello = out.read()
        half = socket.create_connection(("127.0.0.1", self.tls_port), 10)
        self.addCleanup(half.close)
        half.sendall(hello[:len(hello) // 2])
        for sock in (silent, half):
            sock.settimeout(30)
            try:
                self.assertEqual(sock.recv(4096), b"")
            except ConnectionResetError:
                pass
        for ev in self.env.wait_event("logout", count=2), *self.env.events("logout"):
            self.assertEqual(ev["reason"], "timeout")
        self.assertEqual(self.env.events("tls"), [])

    # ------------------------------------------------------------ close
    def half_close_case(self, commands, notify, tcp_fin):
        p = TlsPipe(self.tls_port, self.ctx)
        self.addCleanup(p.close)
        p.write(f"USER alice\r\nPASS {PW}\r\n".encode() + commands)
        if notify:
            p.close_notify()
        if tcp_fin:
            p.sock.shutdown(socket.SHUT_WR)
        return p.read_all()

    def test_half_close_gets_every_reply(self):
        """A client that pipelines, then ends its side (close_notify, a TCP
        FIN or both) still gets every reply, QUIT runs UPDATE, and the
        server ends its side with its own close_notify."""
        big = sized_message(300 * 1024 + 3, "big")
        for notify, fin in ((True, False), (True, True), (False, True)):
            with self.subTest(close_notify=notify, fin=fin):
                env = self.env = self.new_env()
                self.tls_port = free_port()
                env.add_user("alice", PW)
                env.deliver("alice", big)
                env.deliver("alice", simple_message("second"))
                self.start()
                data, how = self.half_close_case(b"STAT\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n",
                                                 notify, fin)
                self.assertEqual(how, "close_notify")
                lines = data.split(b"\r\n")
                self.assertTrue(lines[0].startswith(b"+OK"), data[:200])   # greeting
                self.assertTrue(lines[3].startswith(b"+OK 2 "), lines[3])  # STAT
                self.assertIn(wire_retr(big), data)
                self.assertTrue(data.endswith(b"\r\n.\r\n+OK Message 1 deleted\r\n"
                                              b"+OK Logging out (1 message left)\r\n"),
                                data[-100:])
                ev = env.wait_event("logout", user="alice")
                self.assertEqual(ev["reason"], "quit")
                self.assertEqual(ev["update"], "done")
                self.assertEqual(ev["dele"], "1")
                self.assertEqual(len(env.messages("alice")), 1)

    def test_half_close_without_quit_deletes_nothing(self):
        m = simple_message("kept")
        self.alice([m])
        self.start()
        data, how = self.half_close_case(b"RETR 1\r\nDELE 1\r\n", True, True)
        self.assertEqual(how, "close_notify")
        self.assertIn(wire_retr(m), data)
        self.assertTrue(data.endswith(b"\r\n.\r\n+OK Message 1 deleted\r\n"), data[-100:])
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["update"], "none")
        self.assertEqual(len(self.env.messages("alice")), 1)

    def test_quit_ends_with_close_notify(self):
        self.alice()
        self.start()
        p = TlsPipe(self.tls_port, self.ctx)
        self.addCleanup(p.close)
        p.write(b"QUIT\r\n")
        data, how = p.read_all()
        self.assertEqual(how, "close_notify")
        self.assertTrue(data.startswith(b"+OK"), data)
        self.assertTrue(data.endswith(b"\r\n+OK Bye\r\n"), data)
        self.assertEqual(self.env.wait_event("logout")["reason"], "quit")

    def test_retr_5mb_over_tls(self):
        big = sized_message(5 * 1024 * 1024 + 17, "big")
        small = simple_message("small")
        self.alice([big, small])
        self.start()
        for how in ("stls", "pop3s"):
            with self.subTest(how=how):
                if how == "stls":
                    c = self.env.connect()
                    self.assertEqual(c.cmd("STLS"), "+OK Begin TLS negotiation")
                    starttls(c, self.ctx)
                else:
                    c = Client(self.tls_port, greeting=False)
                    starttls(c, self.ctx)
                    self.assertTrue(c.line().startswith("+OK"))
                self.addCleanup(c.close)
                c.login("alice", PW)
                c.send("RETR 1\r\nRETR 2\r\nNOOP\r\n")
                self.assertEqual(c.line(), f"+OK {len(crlf(big))} octets")
                self.assertEqual(c.multi_raw(), wire_retr(big))
                self.assertTrue(c.line().startswith("+OK"))
                self.assertEqual(c.multi_raw(), wire_retr(small))
                self.assertEqual(c.line(), "+OK")
                self.assertTrue(c.cmd("QUIT").startswith("+OK"))

    def test_commands_sent_during_long_reply(self):
        """Commands that come in while a long reply is still being sent
        are read and answered in order once it is out."""
        big = sized_message(4 * 1024 * 1024 + 5, "big")
        self.alice([big])
        self.start()
        c = Client(self.tls_port, greeting=False)
        self.addCleanup(c.close)
        starttls(c, self.ctx)
        self.assertTrue(c.line().startswith("+OK"))
        c.login("alice", PW)
        c.send("RETR 1\r\n")
        self.assertEqual(c.line(), f"+OK {len(crlf(big))} octets")
        head = c.rf.read(1024 * 1024)
        c.send("NOOP\r\nUIDL 1\r\nNOOP\r\n")
        rest = c.multi_raw()
        self.assertEqual(head + rest, wire_retr(big))
        self.assertEqual(c.line(), "+OK")
        self.assertTrue(c.line().startswith("+OK 1 "))
        self.assertEqual(c.line(), "+OK")
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["reason"], "quit")
        self.assertEqual(ev["commands"], "7", "USER PASS RETR NOOP UIDL NOOP QUIT")

    def test_reset_during_long_reply(self):
        """A TLS client that resets the connection in the middle of a long
        reply ends the session (no UPDATE) and the server goes on."""
        big = sized_message(8 * 1024 * 1024 + 1, "big")
        self.alice([big])
        self.start()
        c = Client(self.tls_port, greeting=False)
        starttls(c, self.ctx)
        self.assertTrue(c.line().startswith("+OK"))
        c.login("alice", PW)
        c.send("DELE 1\r\nRSET\r\nRETR 1\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        self.assertTrue(c.line().startswith("+OK"))
        self.assertTrue(c.line().startswith("+OK"))
        c.rf.read(256 * 1024)
        # Linger 0: close() sends a RST with the rest unread.
        raw = socket.socket(fileno=c.sock.detach())
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        ev = self.env.wait_event("logout", user="alice")
        self.assertIn(ev["reason"], ("connection reset", "write error"))
        self.assertEqual(ev["update"], "none")
        self.assertEqual(len(self.env.messages("alice")), 1)
        p = poplib.POP3_SSL("127.0.0.1", self.tls_port, context=self.ctx, timeout=10)
        p.user("alice")
        p.pass_(PW)
        self.assertEqual(p.stat()[0], 1)
        p.quit()

    # ------------------------------------------------------------ config
    def test_check_missing_key_reports_line(self):
        self.alice()
        missing = self.env.srv / "tls" / "nope.key"
        self.env.settings.update(tls_cert=str(self.cert), tls_key=str(missing))
        self.env.write_config()
        lineno = self.env.config_text().splitlines().index(
            f"tls_key = {missing}") + 1
        r = subprocess.run([str(POBOXD), "-c", str(self.env.conf), "-t"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"{self.env.conf}:{lineno}:", r.stderr)
        self.assertIn("No such file", r.stderr)

    def test_check_tls_errors(self):
        self.alice()
        other_ca, other_cert, other_key = make_pki(self.env.dir / "other", "o")
        cases = [
            ({"tls_cert": "", "tls_key": ""}, [f"tls_listen = 127.0.0.1:{self.tls_port}"],
             "tls_listen needs tls_cert"),
            ({"tls_cert": str(self.cert), "tls_key": str(other_key)}, [],
             "key values mismatch"),
            ({"tls_cert": str(self.key), "tls_key": str(self.key)}, [], "tls_cert"),
            ({"tls_cert": str(self.cert), "tls_key": str(self.key),
              "tls_ciphers": "NO-SUCH-CIPHER"}, [], "tls_ciphers"),
            ({"tls_cert": str(self.cert), "tls_min_version": "TLSv1.1"}, [],
             "'tls_min_version' must be one of"),
        ]
        for settings, extra, want in cases:
            with self.subTest(want=want):
                env = self.new_env()
                env.add_user("alice", PW)
                env.settings.update(settings)
                env.extra_lines = list(extra)
                env.write_config()
                r = subprocess.run([str(POBOXD), "-c", str(env.conf), "-t"],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn(want, r.stderr)
        # Good: cert and key in one file (tls_key empty).
        env = self.new_env()
        env.add_user("alice", PW)
        both = self.env.srv / "tls" / "both.pem"
        both.write_bytes(self.cert.read_bytes() + self.key.read_bytes())
        env.settings.update(tls_cert=str(both), tls_key="")
        env.extra_lines = [f"tls_listen = 127.0.0.1:{self.tls_port}"]
        env.write_config()
        r = subprocess.run([str(POBOXD), "-c", str(env.conf), "-t"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_reload_new_cert(self):
        self.alice()
        self.start()
        old = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.tls_port), 10),
                                   server_hostname="localhost")
        self.addCleanup(old.close)
        old_der = old.getpeercert(binary_form=True)
        # A renewed certificate from the same CA in the same files.
        _, cert2, key2 = make_pki(self.env.srv / "tls", "srv2")
        self.cert.write_bytes(cert2.read_bytes())
        self.key.write_bytes(key2.read_bytes())
        self.env.fix_owner()
        self.daemon.signal(signal.SIGHUP)
        self.env.wait_event("reloaded")
        p = poplib.POP3_SSL("127.0.0.1", self.tls_port, context=self.ctx, timeout=10)
        new_der = p.sock.getpeercert(binary_form=True)
        self.assertNotEqual(old_der, new_der)
        p.quit()
        # The old session still works under its old context.
        f = old.makefile("rb")
        self.assertTrue(f.readline().startswith(b"+OK"))
        old.sendall(b"CAPA\r\n")
        self.assertTrue(f.readline().startswith(b"+OK"))
        f.close()

    def test_reload_keeps_proxied_sessions(self):
        # A TLS session after login is proxied by its login process; a
        # reload retires that process, which serves the session to its
        # end (a long RETR, then QUIT's UPDATE) and then ends. Its slot
        # in max_sessions is held until then, and freed.
        big = sized_message(300000, "big")
        uidl = self.alice([big])[0]
        self.start(max_sessions=2, max_sessions_per_ip=2)
        s = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.tls_port), 10),
                                 server_hostname="localhost")
        self.addCleanup(s.close)
        f = s.makefile("rb")
        self.assertTrue(f.readline().startswith(b"+OK"))
        s.sendall(f"USER alice\r\nPASS {PW}\r\n".encode())
        f.readline()
        self.assertTrue(f.readline().startswith(b"+OK Logged in"))
        self.daemon.signal(signal.SIGHUP)
        ev = self.env.wait_event("retiring")
        self.assertEqual((ev["sessions"], ev["proxied"]), ("0", "1"))
        with self.env.connect() as c:        # the second slot
            self.assertTrue(c.greeting.startswith("+OK"))
            with Client(self.env.port, greeting=False) as full:
                self.assertTrue(full.line().startswith("-ERR [SYS/TEMP]"))
        s.sendall(b"RETR 1\r\n")
        self.assertTrue(f.readline().startswith(b"+OK"))
        body = b""
        while not body.endswith(b"\r\n.\r\n"):
            chunk = f.read1(65536)
            self.assertTrue(chunk)
            body += chunk
        self.assertEqual(body, wire_retr(big))
        s.sendall(b"DELE 1\r\n")
        self.assertTrue(f.readline().startswith(b"+OK"))
        self.assertEqual(self.env.events("login_retired"), [])
        s.sendall(b"QUIT\r\n")
        self.assertTrue(f.readline().startswith(b"+OK"))
        self.env.wait_event("login_retired")
        self.assertNotIn(uidl, self.env.messages("alice"))
        clients = [self.env.connect() for _ in range(2)]
        for c in clients:
            self.assertTrue(c.greeting.startswith("+OK"), c.greeting)
            c.close()
        f.close()
        self.assertEqual(self.env.events("worker_died"), [])

    # ------------------------------------------------------------ SNI
    def sni_setup(self):
        d = self.env.srv / "tls"
        _, self.mail_cert, self.mail_key = make_pki(d, "mail", "DNS:mail.example.org")
        _, self.star_cert, star_key = make_pki(d, "star", "DNS:*.example.net")
        # Key and certificate in one file for this one.
        self.star_both = d / "star-both.pem"
        self.star_both.write_bytes(self.star_cert.read_bytes() + star_key.read_bytes())
        self.env.extra_lines += [
            f"tls_sni = mail.example.org {self.mail_cert} {self.mail_key}",
            f"tls_sni = *.example.net {self.star_both}",
        ]

    def leaf(self, chain):
        """The DER of the first certificate in a PEM chain file."""
        pem = chain.read_text()
        return ssl.PEM_cert_to_DER_cert(pem[:pem.index("-----END CERTIFICATE-----") + 25])

    def presented(self, port, sni, stls=False):
        """The DER certificate the server shows a client asking for sni
        (None: no SNI), fetched without verification."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = Client(port, greeting=stls)
        self.addCleanup(c.close)
        if stls:
            self.assertEqual(c.cmd("STLS"), "+OK Begin TLS negotiation")
        starttls(c, ctx, hostname=sni)
        if not stls:
            self.assertTrue(c.line().startswith("+OK"))
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        return c.sock.getpeercert(binary_form=True)

    def test_sni_chooses_certificate(self):
        self.alice([simple_message("sni")])
        self.sni_setup()
        self.start()
        self.assertEqual(self.env.events("config_warning"), [])
        default = self.leaf(self.cert)
        mail = self.leaf(self.mail_cert)
        star = self.leaf(self.star_cert)
        self.assertEqual(len({default, mail, star}), 3)
        cases = [(None, default), ("mail.example.org", mail), ("MAIL.Example.org", mail),
                 ("pop.example.net", star), ("example.net", default),
                 ("a.b.example.net", default), ("other.test", default)]
        for port, stls in ((self.tls_port, False), (self.env.port, True)):
            for sni, want in cases:
                with self.subTest(stls=stls, sni=sni):
                    self.assertEqual(self.presented(port, sni, stls), want)
        ev = self.env.wait_event("tls", count=2 * len(cases))
        by_sni = {e["sni"]: e["cert"] for e in self.env.events("tls")}
        self.assertEqual(by_sni, {"-": "default", "mail.example.org": "mail.example.org",
                                  "MAIL.Example.org": "mail.example.org",
                                  "pop.example.net": "*.example.net",
                                  "example.net": "default", "a.b.example.net": "default",
                                  "other.test": "default"})
        del ev
        # A verifying client (hostname check against the test CA) logs in
        # under each name.
        for name in ("mail.example.org", "pop.example.net"):
            with self.subTest(verify=name):
                c = Client(self.tls_port, greeting=False)
                self.addCleanup(c.close)
                starttls(c, self.ctx, hostname=name)
                self.assertTrue(c.line().startswith("+OK"))
                c.login("alice", PW)
                self.assertTrue(c.cmd("STAT").startswith("+OK 1 "))
                self.assertTrue(c.cmd("QUIT").startswith("+OK"))

    def test_sni_openssl_s_client(self):
        self.alice()
        self.sni_setup()
        self.start()
        for name, args in (("mail.example.org", ["-connect", f"127.0.0.1:{self.tls_port}"]),
                           ("x.example.net", ["-starttls", "pop3", "-connect",
                                              f"127.0.0.1:{self.env.port}"])):
            with self.subTest(name=name):
                r = subprocess.run(["openssl", "s_client", *args, "-servername", name,
                                    "-verify_hostname", name, "-CAfile", str(self.ca),
                                    "-verify_return_error", "-brief"],
                                   input="QUIT\r\n", capture_output=True, text=True,
                                   timeout=30)
                out = r.stdout + r.stderr
                self.assertEqual(r.returncode, 0, out)
                self.assertIn("Verification: OK", out)
                self.assertIn(f"Peer certificate: CN = {'mail' if name[0] == 'm' else 'star'}", out)
        # A name the default certificate does not carry fails verification.
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.tls_port}",
                            "-servername", "nope.example.com", "-verify_hostname",
                            "nope.example.com", "-CAfile", str(self.ca),
                            "-verify_return_error", "-brief"],
                           input="QUIT\r\n", capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_sni_reload(self):
        self.alice()
        self.sni_setup()
        self.start()
        before = self.presented(self.tls_port, "mail.example.org")
        self.assertEqual(before, self.leaf(self.mail_cert))
        # Renewed in place: new sessions get the new one after SIGHUP.
        _, cert2, key2 = make_pki(self.env.srv / "tls", "mail2", "DNS:mail.example.org")
        self.mail_cert.write_bytes(cert2.read_bytes())
        self.mail_key.write_bytes(key2.read_bytes())
        self.env.fix_owner()
        self.daemon.signal(signal.SIGHUP)
        self.env.wait_event("reloaded")
        after = self.presented(self.tls_port, "mail.example.org")
        self.assertEqual(after, self.leaf(cert2))
        self.assertNotEqual(after, before)
        # A broken tls_sni line on reload keeps the old configuration.
        self.env.extra_lines.append(f"tls_sni = bad.example.org {self.env.srv / 'tls' / 'nope.pem'}")
        self.env.write_config()
        self.daemon.signal(signal.SIGHUP)
        ev = self.env.wait_event("reload_failed")
        self.assertIn("nope.pem", ev["error"])
        self.assertEqual(self.presented(self.tls_port, "mail.example.org"), after)

    def test_sni_certificate_not_for_name_warns(self):
        """A tls_sni certificate that is not valid for its NAME loads (the
        admin may know better) but -t, the start and a reload warn."""
        self.alice()
        d = self.env.srv / "tls"
        _, mail_cert, mail_key = make_pki(d, "mail", "DNS:mail.example.org")
        self.env.settings.update(tls_cert=str(self.cert), tls_key=str(self.key))
        self.env.extra_lines.append(f"tls_sni = pop.example.org {mail_cert} {mail_key}")
        self.env.write_config()
        r = subprocess.run([str(POBOXD), "-c", str(self.env.conf), "-t"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"warning: tls_sni pop.example.org: the certificate {mail_cert} "
                      "is not valid for that name", r.stderr)
        self.start()
        ev = self.env.wait_event("config_warning")
        self.assertIn("pop.example.org", ev["warning"])
        self.daemon.signal(signal.SIGHUP)
        self.env.wait_event("reloaded")
        self.env.wait_event("config_warning", count=2)

    def test_check_sni_errors(self):
        self.alice()
        d = self.env.srv / "tls"
        _, mail_cert, mail_key = make_pki(d, "mail", "DNS:mail.example.org")
        cases = [
            ({}, [f"tls_sni = mail.example.org {mail_cert}"], "tls_sni needs tls_cert"),
            ({"tls_cert": str(self.cert), "tls_key": str(self.key)},
             [f"tls_sni = mail.example.org {mail_cert}"], "tls_sni key"),
            ({"tls_cert": str(self.cert), "tls_key": str(self.key)},
             [f"tls_sni = mail.example.org {mail_cert} {self.key}"], "mismatch"),
            ({"tls_cert": str(self.cert), "tls_key": str(self.key)},
             [f"tls_sni = *.org {mail_cert} {mail_key}"], "not a DNS name"),
            ({"tls_cert": str(self.cert), "tls_key": str(self.key)},
             [f"tls_sni = mail.example.org {d / 'nope.pem'}"], "No such file"),
            ({"tls_cert": str(self.cert), "tls_key": str(self.key)},
             ["tls_sni = mail.example.org"], "NAME CERTFILE [KEYFILE]"),
            ({"tls_cert": str(self.cert), "tls_key": str(self.key)},
             [f"tls_sni = mail.example.org {mail_cert} {mail_key}",
              f"tls_sni = MAIL.example.org {mail_cert} {mail_key}"],
             "tls_sni MAIL.example.org given twice"),
        ]
        for settings, extra, want in cases:
            with self.subTest(want=want):
                env = self.new_env()
                env.add_user("alice", PW)
                env.settings.update(settings)
                env.extra_lines = list(extra)
                env.write_config()
                r = subprocess.run([str(POBOXD), "-c", str(env.conf), "-t"],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn(want, r.stderr)

    # mpop (Debian's) over STLS and over implicit TLS, verifying the
    # server against the test CA.
    def run_mpop(self, port, starttls):
        mpop = need_tool(self, "mpop")
        inbox = self.env.cli / f"inbox-{port}"
        for sub in ("cur", "new", "tmp"):
            (inbox / sub).mkdir(parents=True, exist_ok=True)
        rc = self.env.cli / f"mpoprc-{port}"
        rc.write_text(
            "defaults\n"
            "tls on\n"
            f"tls_starttls {'on' if starttls else 'off'}\n"
            f"tls_trust_file {self.ca}\n"
            "timeout 15\n"
            "received_header off\n"
            f"uidls_file {self.env.cli / 'uidls'}-{port}\n"
            "account e2e\n"
            "host 127.0.0.1\n"
            f"port {port}\n"
            "user alice\n"
            f"password {PW}\n"
            "auth user\n"
            f"delivery maildir {inbox}\n"
            "keep on\n")
        os.chmod(rc, 0o600)
        r = subprocess.run([mpop, "-C", str(rc), "-Q", "e2e"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        got = []
        for sub in ("new", "cur"):
            got += [(inbox / sub / n).read_bytes() for n in os.listdir(inbox / sub)]
        return sorted(got)

    def test_tls_paths_under_the_login_filter(self):
        # The login process runs TLS under its seccomp list: every TLS
        # path must stay on it (a call off it kills the process: a
        # worker_died). Key updates both ways before and after login
        # (the session proxied), resumed sessions over STLS and POP3S,
        # TLS 1.2 with a renegotiation attempt (refused), SNI.
        self.alice([simple_message("tls paths")])
        self.start(tls_min_version="TLSv1.2")
        login = self.daemon.roles()["login"]
        sess = self.env.dir / "sess"
        base = ["-CAfile", str(self.ca), "-verify_return_error", "-servername", "localhost"]
        pop3s = ["-connect", f"127.0.0.1:{self.tls_port}"]
        stls = ["-starttls", "pop3", "-connect", f"127.0.0.1:{self.env.port}"]
        cases = [(pop3s, "-tls1_3", "k"), (pop3s, "-tls1_3", "K"),
                 (stls, "-tls1_3", "K"), (stls, "-tls1_2", None),
                 (pop3s, "-tls1_2", None)]
        for where, version, letter in cases:
            with self.subTest(where=where[0], version=version, letter=letter):
                for resume in (False, True):
                    c = SClient([*base, *where, version,
                                 "-sess_in" if resume else "-sess_out", str(sess)])
                    self.assertTrue(c.expect("+OK"))
                    # Each of s_client's reads of stdin is one command
                    # or data: the next line waits for its outcome.
                    for line, reply in (("USER alice", "+OK"),
                                        (f"PASS {PW}", "+OK Logged in"),
                                        ("stat", "+OK 1 "), ("list", ".")):
                        self.assertTrue(c.line(line, reply))
                        if letter:
                            self.assertTrue(c.line(letter, "KEYUPDATE"))
                    self.assertTrue(c.line("quit", "+OK Logging out"))
                    out = c.close()
                    self.assertIn("Reused" if resume else "New", out)
                    if letter:
                        self.assertIn("KEYUPDATE", out)
        # TLS 1.2 renegotiation, before and after login: refused (the
        # client gives up), nothing dies.
        for stage in ("USER alice", f"PASS {PW}"):
            c = SClient([*base, *pop3s, "-tls1_2"])
            self.assertTrue(c.expect("+OK"))
            c.line("USER alice", "+OK")
            if stage.startswith("PASS"):
                c.line(stage, "+OK Logged in")
            c.line("R", "RENEGOTIATING")
            self.assertFalse(c.line("stat", "+OK"))   # the client gave up
            c.close()
        with self.env.connect() as c:
            c.login("alice", PW)
            c.ok("QUIT")
        self.assertEqual(self.env.events("worker_died"), [])
        self.assertEqual(self.daemon.roles()["login"], login)

    def test_mpop_stls_and_pop3s(self):
        self.env.add_user("alice", PW)
        bodies = [simple_message("tls one"), simple_message("tls two", ".dot\n")]
        for b in bodies:
            self.env.deliver("alice", b)
        self.start()
        for port, starttls in ((self.env.port, True), (self.tls_port, False)):
            with self.subTest(starttls=starttls):
                got = self.run_mpop(port, starttls)
                self.assertEqual(len(got), 2)
                self.assertEqual(got, sorted(bodies))
        self.assertGreaterEqual(len(self.env.events("tls")), 2)
        # keep on: nothing was deleted on the server.
        self.assertEqual(len(self.env.messages("alice")), 2)


if __name__ == "__main__":
    unittest.main()
