"""test_protocol.py: POP3 on raw sockets (RFC 1939, 2449, 3206): the exact
octets on the wire, the maildir on disk and the log after each session."""

import socket
import struct
import time
import unittest

from harness import (Client, PoboxTestCase, apop_digest, crlf, sized_message,
                     simple_message, uidl_digest, uidl_of, wire_body,
                     wire_retr, wire_top)

PW = "s3cret pass"   # RFC 1939 §7: PASS takes the rest of the line


class ProtocolTest(PoboxTestCase):

    def setup_alice(self, msgs=(), **settings):
        """User alice with msgs (bytes) in new/, daemon started.
        Returns {uidl: bytes} in maildrop order."""
        self.env.add_user("alice", PW)
        self.stored = {}
        for m in msgs:
            p = self.env.deliver("alice", m)
            self.stored[uidl_of(p.name)] = m
        self.daemon = self.env.start(**settings)
        return self.stored

    def login(self, user="alice", pw=PW):
        c = self.env.connect()
        self.addCleanup(c.close)
        c.login(user, pw)
        return c

    # ------------------------------------------------------------ greeting, CAPA
    def test_greeting_and_capa(self):
        self.setup_alice([simple_message("one")], implementation="pobox-e2e-impl")
        c = self.env.connect()
        self.assertTrue(c.greeting.startswith("+OK"), c.greeting)
        self.assertNotIn("<", c.greeting, "no APOP timestamp when apop = no")
        c.send("CAPA\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        caps = c.multi()
        names = [x.split()[0].upper() for x in caps]
        for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE",
                    "PIPELINING", "EXPIRE", "IMPLEMENTATION"):
            self.assertIn(cap, names, caps)
        self.assertIn("IMPLEMENTATION pobox-e2e-impl", caps)
        self.assertIn("EXPIRE NEVER", caps)
        self.assertNotIn("LOGIN-DELAY", names, "login_delay = 0: not advertised")
        self.assertNotIn("STLS", names, "no TLS configured")
        # CAPA in TRANSACTION: no USER any more (RFC 2449 §6.8).
        c.login("alice", PW)
        c.send("CAPA\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        caps2 = [x.split()[0].upper() for x in c.multi()]
        self.assertNotIn("USER", caps2)
        self.assertIn("UIDL", caps2)
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        self.assertTrue(c.is_closed())

    def test_capa_login_delay_and_expire(self):
        self.setup_alice([simple_message("a"), simple_message("b")],
                         login_delay=60, expire=0)
        c = self.env.connect()
        c.send("CAPA\r\n")
        c.line()
        caps = c.multi()
        # RFC 2449 §6.5/§6.7: USER suffix as the policy may vary per user.
        self.assertTrue(any(x.split()[:2] == ["LOGIN-DELAY", "60"] for x in caps), caps)
        self.assertTrue(any(x.split()[:2] == ["EXPIRE", "0"] for x in caps), caps)
        c.login("alice", PW)
        c.send("CAPA\r\n")
        c.line()
        caps = c.multi()
        self.assertIn("LOGIN-DELAY 60", caps)
        self.assertIn("EXPIRE 0", caps)
        # EXPIRE 0: a retrieved message goes at QUIT even without DELE.
        first = list(self.stored)[0]
        c.send("RETR 1\r\n")
        c.line()
        c.multi_raw()
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        c.close()
        self.env.wait_event("logout", user="alice")
        self.assertNotIn(first, self.env.messages("alice"))
        self.assertEqual(len(self.env.messages("alice")), 1)
        # LOGIN-DELAY 60: a second login right away is refused.
        c = self.env.connect()
        c.cmd("USER alice")
        r = c.cmd(f"PASS {PW}")
        self.assertTrue(r.startswith("-ERR [LOGIN-DELAY]"), r)
        c.close()
        self.env.wait_event("login_failed", user="alice", reason="login_delay")

    # ------------------------------------------------------------ authentication
    def test_bad_credentials_auth_code(self):
        self.setup_alice([simple_message("a")])
        c = self.env.connect()
        self.assertTrue(c.cmd("USER alice").startswith("+OK"))
        r = c.cmd("PASS Wr0ngPa55")
        self.assertTrue(r.startswith("-ERR [AUTH]"), r)
        self.assertTrue(c.cmd("USER nosuchuser").startswith("+OK"))
        r = c.cmd(f"PASS {PW}")
        self.assertTrue(r.startswith("-ERR [AUTH]"), r)
        # A failed login leaves the session in AUTHORIZATION: retry works.
        c.login("alice", PW)
        self.assertEqual(c.cmd("STAT"), f"+OK 1 {len(crlf(simple_message('a')))}")
        c.cmd("QUIT")
        self.env.wait_event("login_failed", user="alice", reason="bad_password")
        self.env.wait_event("login_failed", user="nosuchuser")
        self.env.wait_event("login", user="alice", method="pass")
        self.assertNotIn(PW, self.env.log_text(), "password in the log")
        self.assertNotIn("Wr0ngPa55", self.env.log_text(), "password in the log")

    def test_password_with_spaces_and_case_insensitive_keywords(self):
        self.setup_alice([simple_message("a"), simple_message("b")])
        c = self.env.connect()
        self.assertTrue(c.cmd("user alice").startswith("+OK"))
        self.assertTrue(c.cmd(f"pAsS {PW}").startswith("+OK"))
        self.assertTrue(c.cmd("stat").startswith("+OK 2 "))
        self.assertTrue(c.cmd("LiSt 2").startswith("+OK 2 "))
        self.assertTrue(c.cmd("uidl 1").startswith("+OK 1 "))
        self.assertTrue(c.cmd("Noop").startswith("+OK"))
        c.send("top 1 0\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        c.multi_raw()
        self.assertTrue(c.cmd("quit").startswith("+OK"))

    def test_in_use(self):
        self.setup_alice([simple_message("a")])
        c1 = self.login()
        c2 = self.env.connect()
        self.assertTrue(c2.cmd("USER alice").startswith("+OK"))
        r = c2.cmd(f"PASS {PW}")
        self.assertTrue(r.startswith("-ERR [IN-USE]"), r)
        self.env.wait_event("login_failed", user="alice", reason="in_use")
        # c1 is unaffected; after its QUIT the maildrop is free again.
        self.assertTrue(c1.cmd("STAT").startswith("+OK 1 "))
        self.assertTrue(c1.cmd("QUIT").startswith("+OK"))
        self.assertTrue(c1.is_closed())
        self.env.wait_event("logout", user="alice")
        c2.login("alice", PW)
        self.assertTrue(c2.cmd("STAT").startswith("+OK 1 "))
        # A session cut off also frees the lock.
        c2.close()
        self.env.wait_event("logout", user="alice", count=2)
        c3 = self.login()
        self.assertTrue(c3.cmd("QUIT").startswith("+OK"))

    def test_apop(self):
        self.env.add_user_line("mrose", "unused-pw", extra="apop=tanstaafl")
        p = self.env.deliver("mrose", simple_message("apop"))
        self.env.add_user("alice", PW)
        self.env.start(apop="yes")
        c = self.env.connect()
        self.assertRegex(c.greeting, r"^\+OK .*<[^<>@ ]+@[^<> ]+>")
        r = c.cmd("APOP mrose " + apop_digest(c.greeting, "wrongsecret"))
        self.assertTrue(r.startswith("-ERR [AUTH]"), r)
        r = c.cmd("APOP mrose " + apop_digest(c.greeting, "tanstaafl"))
        self.assertTrue(r.startswith("+OK"), r)
        self.assertEqual(c.cmd("UIDL 1"), f"+OK 1 {uidl_of(p.name)}")
        c.cmd("QUIT")
        self.env.wait_event("login", user="mrose", method="apop")
        # Each greeting has its own timestamp (RFC 1939 §7).
        c2 = self.env.connect()
        self.assertNotEqual(c2.greeting, c.greeting)
        # A user without an APOP secret cannot use APOP.
        r = c2.cmd("APOP alice " + apop_digest(c2.greeting, PW))
        self.assertTrue(r.startswith("-ERR [AUTH]"), r)
        r = c2.cmd("APOP mrose nothex")
        self.assertTrue(r.startswith("-ERR"), r)
        c2.close()
        self.assertNotIn("tanstaafl", self.env.log_text())

    def test_apop_disabled(self):
        self.env.add_user_line("mrose", "pw", extra="apop=tanstaafl")
        self.env.start(apop="no")
        c = self.env.connect()
        r = c.cmd("APOP mrose " + "0" * 32)
        self.assertTrue(r.startswith("-ERR"), r)

    def test_cleartext_never(self):
        self.env.add_user_line("mrose", "pw", extra="apop=tanstaafl")
        self.env.add_user("alice", PW)
        self.env.start(cleartext_auth="never", apop="yes")
        c = self.env.connect()
        c.send("CAPA\r\n")
        c.line()
        self.assertNotIn("USER", [x.split()[0] for x in c.multi()])
        r = c.cmd("USER alice")
        self.assertTrue(r.startswith("-ERR"), r)
        r = c.cmd(f"PASS {PW}")
        self.assertTrue(r.startswith("-ERR"), r)
        r = c.cmd("APOP mrose " + apop_digest(c.greeting, "tanstaafl"))
        self.assertTrue(r.startswith("+OK"), r)

    def test_auth_failure_delay(self):
        # The delay doubles with each recent failure from the address
        # (RFC 1939 §13); the log says which delay was chosen, so no
        # wall-clock time is asserted here.
        self.setup_alice([], auth_failure_delay=1)
        c = self.env.connect()
        for i, want in enumerate((1000, 2000, 4000), 1):
            c.cmd("USER alice")
            r = c.cmd(f"PASS wrong{i}")
            self.assertTrue(r.startswith("-ERR [AUTH]"), r)
            ev = self.env.wait_event("login_failed", count=i, user="alice")
            self.assertEqual(ev["reason"], "bad_password")
            self.assertEqual(int(ev["delay_ms"]), want)
        # An unknown user takes the same path and gets the same reply.
        c.cmd("USER nobody-here")
        self.assertTrue(c.cmd("PASS x").startswith("-ERR [AUTH] Authentication failed"))
        ev = self.env.wait_event("login_failed", user="nobody-here")
        self.assertEqual((ev["reason"], ev["delay_ms"]), ("unknown_user", "8000"))
        c.close()
        # A good login is answered without a failure delay.
        with self.env.connect() as c2:
            c2.login("alice", PW)
        self.env.wait_event("login", user="alice")
        self.assertEqual(len(self.env.events("login_failed")), 4)

    # ------------------------------------------------------------ states
    def test_wrong_state_commands(self):
        self.setup_alice([simple_message("a")])
        c = self.env.connect()
        for cmd in ("STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP",
                    "RSET", "TOP 1 0", "UIDL", "UIDL 1", "PASS x"):
            r = c.cmd(cmd)
            self.assertTrue(r.startswith("-ERR"), f"{cmd} before login: {r}")
        c.login("alice", PW)
        for cmd in ("USER alice", f"PASS {PW}", "APOP alice " + "0" * 32):
            r = c.cmd(cmd)
            self.assertTrue(r.startswith("-ERR"), f"{cmd} after login: {r}")
        self.assertTrue(c.cmd("STAT").startswith("+OK 1 "))
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        self.assertEqual(len(self.env.messages("alice")), 1)

    def test_unknown_and_malformed(self):
        self.setup_alice([simple_message("a")])
        c = self.env.connect()
        for line in (b"", b" ", b"XYZZY", b"STAT\x00", b"QUITX", b"\xff\xfe",
                     b"US ER alice"):
            c.send(line + b"\r\n")
            r = c.line()
            self.assertTrue(r.startswith("-ERR"), f"{line!r}: {r}")
        c.login("alice", PW)
        for cmd in ("STAT 1", "NOOP x", "RSET 1", "LIST 1 2", "UIDL 1 2",
                    "DELE", "RETR", "TOP 1", "TOP", "TOP 1 2 3", "DELE 1 1"):
            r = c.cmd(cmd)
            self.assertTrue(r.startswith("-ERR"), f"{cmd}: {r}")
        self.assertTrue(c.cmd("STAT").startswith("+OK 1 "))
        c.cmd("QUIT")
        self.assertEqual(len(self.env.messages("alice")), 1, "DELE 1 1 deleted")

    def test_strict_numbers(self):
        msgs = self.setup_alice([simple_message(f"m{i}") for i in range(3)],
                                max_bad_commands=100)
        size = sum(len(crlf(m)) for m in msgs.values())
        c = self.login()
        for cmd in ("LIST 4294967297", "LIST 4294967296", "LIST 4294967295",
                    "LIST 18446744073709551617", "LIST 0", "LIST 4",
                    "LIST -1", "LIST +1", "LIST 1x", "LIST 0x1", "LIST 1.0",
                    "LIST  1", "DELE -1", "DELE 4294967297", "DELE 0",
                    "RETR 1x", "RETR -0", "RETR 4294967298", "UIDL 4294967297",
                    "TOP 1 -1", "TOP 1 x", "TOP 4294967297 1", "TOP x 1",
                    "TOP 1 18446744073709551616"):
            r = c.cmd(cmd)
            self.assertTrue(r.startswith("-ERR"), f"{cmd} -> {r}")
        # Nothing was deleted or retrieved by any of them.
        self.assertEqual(c.cmd("STAT"), f"+OK 3 {size}")
        r = c.cmd("LIST 3")
        self.assertTrue(r.startswith("+OK 3 "), r)
        c.send("TOP 1 4294967295\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        self.assertEqual(c.multi_raw(), wire_retr(list(msgs.values())[0]))
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        self.env.wait_event("logout", user="alice")
        self.assertFilesEqual(self.env, "alice", msgs)
        ev = self.env.events("logout", user="alice")[0]
        self.assertEqual(ev["dele"], "0")

    def test_bad_command_disconnect(self):
        self.setup_alice([simple_message("a")], max_bad_commands=3)
        c = self.login()
        c.send("DELE 1\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        self.assertTrue(c.cmd("BOGUS1").startswith("-ERR"))
        self.assertTrue(c.cmd("BOGUS2").startswith("-ERR"))
        r = c.cmd("BOGUS3")
        self.assertTrue(r.startswith("-ERR"), r)
        self.assertTrue(c.is_closed(), "still open after max_bad_commands")
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["bad_commands"], "3")
        self.assertNotEqual(ev["reason"], "quit",
                            "a bad-command disconnect is logged as a QUIT")
        self.assertEqual(ev["dele"], "0")
        self.assertEqual(len(self.env.messages("alice")), 1,
                         "disconnect ran UPDATE")

    def test_bad_command_disconnect_before_login(self):
        self.setup_alice([], max_bad_commands=2)
        c = self.env.connect()
        c.cmd("FOO")
        c.cmd("BAR")
        self.assertTrue(c.is_closed())

    # ------------------------------------------------------------ line limit
    def test_line_limit(self):
        self.setup_alice([simple_message("a")])
        c = self.env.connect()
        # RFC 2449 §4: 255 octets including CRLF is the limit.
        name = "u" * (255 - 2 - len("USER "))
        self.assertTrue(c.cmd("USER " + name).startswith("+OK"), "255 octets refused")
        r = c.cmd("USER " + name + "v")
        self.assertTrue(r.startswith("-ERR"), "256 octets accepted")
        # A huge line gives exactly one -ERR and the session stays in sync.
        c.send(b"USER " + b"x" * 100000 + b"\r\nNOOP\r\nUSER alice\r\n")
        r1, r2, r3 = c.line(), c.line(), c.line()
        self.assertTrue(r1.startswith("-ERR"), r1)
        self.assertTrue(r2.startswith("-ERR"), r2)   # NOOP before login
        self.assertTrue(r3.startswith("+OK"), r3)
        self.assertTrue(c.cmd(f"PASS {PW}").startswith("+OK"))
        c.send(b"LIST " + b"1" * 300 + b"\r\nSTAT\r\n")
        self.assertTrue(c.line().startswith("-ERR"))
        self.assertTrue(c.line().startswith("+OK 1 "))
        # A long line split over many packets.
        for _ in range(10):
            c.send(b"A" * 100)
        c.send(b"\r\nSTAT\r\n")
        self.assertTrue(c.line().startswith("-ERR"))
        self.assertTrue(c.line().startswith("+OK 1 "))
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))

    # ------------------------------------------------------------ pipelining
    def test_pipelining_one_packet(self):
        msgs = self.setup_alice([simple_message("p1"), simple_message(".p2", ".dot\n"),
                                 simple_message("p3")])
        m = list(msgs.values())
        uidls = list(msgs)
        c = self.env.connect()
        c.send(f"CAPA\r\nUSER alice\r\nPASS {PW}\r\nSTAT\r\nLIST\r\nUIDL 2\r\n"
               "RETR 2\r\nDELE 1\r\nDELE 1\r\nSTAT\r\nTOP 3 0\r\nNOOP\r\nQUIT\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        c.multi()
        self.assertTrue(c.line().startswith("+OK"))
        self.assertTrue(c.line().startswith("+OK"))
        sizes = [len(crlf(x)) for x in m]
        self.assertEqual(c.line(), f"+OK 3 {sum(sizes)}")
        self.assertTrue(c.line().startswith("+OK"))
        self.assertEqual(c.multi(), [f"{i + 1} {s}" for i, s in enumerate(sizes)])
        self.assertEqual(c.line(), f"+OK 2 {uidls[1]}")
        self.assertTrue(c.line().startswith("+OK"))
        self.assertEqual(c.multi_raw(), wire_retr(m[1]))
        self.assertTrue(c.line().startswith("+OK"))
        self.assertTrue(c.line().startswith("-ERR"))
        self.assertEqual(c.line(), f"+OK 2 {sizes[1] + sizes[2]}")
        self.assertTrue(c.line().startswith("+OK"))
        self.assertEqual(c.multi_raw(), wire_retr(wire_top(m[2], 0)))
        self.assertTrue(c.line().startswith("+OK"))
        self.assertTrue(c.line().startswith("+OK"))
        self.assertTrue(c.is_closed())
        self.env.wait_event("logout", user="alice")
        self.assertFilesEqual(self.env, "alice", {uidls[1]: m[1], uidls[2]: m[2]})

    def test_pipelining_many_commands(self):
        """More pipelined input than the server buffers: it must stop reading,
        answer everything in order and lose nothing."""
        self.setup_alice([simple_message("a")])
        c = self.login()
        n = 3000
        c.send(b"".join(b"NOOP\r\nUIDL 1\r\n" for _ in range(n)) + b"STAT\r\n")
        uidl = "+OK 1 " + list(self.stored)[0]
        for i in range(n):
            self.assertEqual(c.line(), "+OK")
            self.assertEqual(c.line(), uidl)
        self.assertTrue(c.line().startswith("+OK 1 "))

    def test_pipelining_behind_the_login(self):
        """Commands pipelined right behind PASS, more than the server
        reads at once: they go with the session to the mail process
        (privilege separation) and are answered in order, lost nothing."""
        self.setup_alice([simple_message("a")])
        c = self.env.connect()
        n = 12000        # 72,000 octets: past one 64 KiB read
        c.send(f"USER alice\r\nPASS {PW}\r\n".encode() +
               b"NOOP\r\n" * n + b"STAT\r\nQUIT\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        self.assertTrue(c.line().startswith("+OK Logged in"))
        for i in range(n):
            self.assertEqual(c.line(), "+OK", f"NOOP {i}")
        self.assertTrue(c.line().startswith("+OK 1 "))
        self.assertTrue(c.line().startswith("+OK"))

    def test_one_byte_at_a_time(self):
        self.setup_alice([simple_message("a")])
        c = self.env.connect()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in f"USER alice\r\nPASS {PW}\r\nSTAT\r\n".encode():
            c.send(bytes([b]))
            time.sleep(0.002)
        self.assertTrue(c.line().startswith("+OK"))
        self.assertTrue(c.line().startswith("+OK"))
        self.assertTrue(c.line().startswith("+OK 1 "))

    # ------------------------------------------------------------ RETR / TOP
    def test_retr_byte_exact(self):
        cases = [
            b"Subject: lf\n\nline one\n.starts with dot\n.\n..\nend\n",
            b"Subject: crlf\r\n\r\nline\r\n.dot\r\n\r\nlast\r\n",
            b"Subject: mixed\n\r\na\r\nb\nc\r\n",
            "Subject: 8bit\n\nGr\u00fc\u00dfe, \u65e5\u672c, caf\u00e9\n".encode()
            + bytes(range(0x80, 0x100)) + b"\n",
            b"Subject: no final newline\n\nlast line",
            b"Subject: bare cr\n\na\rb\n\r\n",
            b"",
            b".\n",
            b"Subject: x\n\n" + b"y" * 5000 + b"\n",   # one long stored line
        ]
        # A dot and a CRLF straddling the 16 KiB read chunks.
        pad = b"Subject: chunk\n\n" + b"z" * (16384 - 17) + b"\n"
        cases.append(pad + b".after boundary\n")
        cases.append(pad[:-1] + b"\r\n.x\r\n")
        cases.append(b"Subject: chunk2\n\n" + b"z" * (16382 - 17) + b"\r\n.y\n")
        msgs = self.setup_alice(cases)
        c = self.login()
        for i, (uidl, data) in enumerate(msgs.items(), 1):
            r = c.cmd(f"LIST {i}")
            size = int(r.split()[2])
            wanted = {len(crlf(data)), len(wire_body(data))}
            self.assertIn(size, wanted, f"LIST size of case {i}: {data[:40]!r}")
            c.send(f"RETR {i}\r\n")
            self.assertEqual(c.line(), f"+OK {size} octets")
            self.assertEqual(c.multi_raw(), wire_retr(data), f"case {i}: {data[:40]!r}")
        c.cmd("QUIT")
        self.env.wait_event("logout", user="alice")
        self.assertFilesEqual(self.env, "alice", msgs)

    def test_retr_large_message(self):
        lines = []
        for i in range(60000):
            lines.append(b"." * (i % 3) + b"line %d " % i + b"\xc3\xa9" * (i % 40))
        data = b"Subject: big\n\n" + b"\n".join(lines) + b"\n"
        msgs = self.setup_alice([data, simple_message("after")])
        c = self.login()
        c.send("RETR 1\r\nNOOP\r\nRETR 2\r\n")
        self.assertEqual(c.line(), f"+OK {len(crlf(data))} octets")
        self.assertEqual(c.multi_raw(), wire_retr(data))
        self.assertEqual(c.line(), "+OK")
        c.line()
        self.assertEqual(c.multi_raw(), wire_retr(list(msgs.values())[1]))
        c.cmd("QUIT")
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["retr"], "2")
        self.assertEqual(int(ev["retr_bytes"]),
                         sum(len(crlf(m)) for m in msgs.values()))

    def test_top(self):
        body = "".join(f"{'.' if i % 3 == 0 else ''}body {i}\n" for i in range(1, 11))
        m1 = ("Subject: top\nX-H: 1\n\n" + body).encode()
        m2 = b"Subject: crlf\r\nX: y\r\n\r\nb1\r\n.b2\r\nb3\r\n"
        m3 = b"Subject: header only\nX: y\n"
        m4 = b"Subject: t\n\nonly line no newline"
        msgs = self.setup_alice([m1, m2, m3, m4])
        c = self.login()
        for i, m in enumerate([m1, m2, m3, m4], 1):
            for n in (0, 1, 2, 3, 10, 11, 1000):
                c.send(f"TOP {i} {n}\r\n")
                r = c.line()
                self.assertTrue(r.startswith("+OK"), r)
                self.assertEqual(c.multi_raw(), wire_retr(wire_top(m, n)),
                                 f"TOP {i} {n}")
        self.assertTrue(c.cmd("TOP 5 0").startswith("-ERR"))
        c.cmd("QUIT")
        ev = self.env.wait_event("logout", user="alice")
        self.assertFilesEqual(self.env, "alice", msgs)

    # ------------------------------------------------------------ DELE / RSET
    def test_dele_rset_quit(self):
        msgs = self.setup_alice([simple_message(f"d{i}") for i in range(4)])
        u = list(msgs)
        m = list(msgs.values())
        sz = [len(crlf(x)) for x in m]
        c = self.login()
        self.assertTrue(c.cmd("DELE 2").startswith("+OK"))
        self.assertTrue(c.cmd("DELE 2").startswith("-ERR"), "deleted twice")
        self.assertTrue(c.cmd("RETR 2").startswith("-ERR"))
        self.assertTrue(c.cmd("LIST 2").startswith("-ERR"))
        self.assertTrue(c.cmd("UIDL 2").startswith("-ERR"))
        self.assertTrue(c.cmd("TOP 2 1").startswith("-ERR"))
        self.assertEqual(c.cmd("STAT"), f"+OK 3 {sz[0] + sz[2] + sz[3]}")
        c.send("LIST\r\n")
        c.line()
        self.assertEqual(c.multi(), [f"1 {sz[0]}", f"3 {sz[2]}", f"4 {sz[3]}"])
        c.send("UIDL\r\n")
        c.line()
        self.assertEqual(c.multi(), [f"1 {u[0]}", f"3 {u[2]}", f"4 {u[3]}"])
        # Deletions are only marks until QUIT (RFC 1939 §6).
        self.assertEqual(len(self.env.messages("alice")), 4)
        r = c.cmd("RSET")
        self.assertTrue(r.startswith("+OK"), r)
        self.assertEqual(c.cmd("STAT"), f"+OK 4 {sum(sz)}")
        self.assertTrue(c.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(c.cmd("DELE 4").startswith("+OK"))
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        self.assertTrue(c.is_closed())
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["reason"], "quit")
        self.assertEqual(ev["dele"], "2")
        self.assertEqual(ev["dele_bytes"], str(sz[0] + sz[3]))
        self.assertFilesEqual(self.env, "alice", {u[1]: m[1], u[2]: m[2]})

    def test_cut_off_before_quit_deletes_nothing(self):
        msgs = self.setup_alice([simple_message(f"c{i}") for i in range(3)])
        c = self.login()
        for i in (1, 2, 3):
            self.assertTrue(c.cmd(f"DELE {i}").startswith("+OK"))
        c.sock.shutdown(socket.SHUT_WR)   # EOF instead of QUIT
        self.assertTrue(c.is_closed())
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["reason"], "eof")
        self.assertEqual(ev["dele"], "0")
        self.assertFilesEqual(self.env, "alice", msgs)
        # A reset connection in the middle of a long RETR: same.
        big = b"Subject: big\n\n" + b"0123456789" * 200000 + b"\n"
        self.env.deliver("alice", big)
        c = self.login()
        c.cmd("DELE 1")
        c.send("RETR 4\r\n")
        c.rf.read(1000)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        ev = self.env.wait_event("logout", user="alice", count=2)
        self.assertEqual(ev["dele"], "0")
        self.assertEqual(len(self.env.messages("alice")), 4)
        self.assertTrue(self.daemon.alive())

    def test_message_removed_during_session(self):
        """Another agent removes a message under an open session: RETR says
        -ERR [SYS/TEMP] (RFC 3206), nothing crashes, QUIT still works."""
        msgs = self.setup_alice([simple_message(f"r{i}") for i in range(3)])
        u = list(msgs)
        c = self.login()
        victim = [p for sub in ("new", "cur")
                  for p in (self.env.maildir("alice") / sub).iterdir()
                  if uidl_of(p.name) == u[1]][0]
        victim.unlink()
        r = c.cmd("RETR 2")
        self.assertTrue(r.startswith("-ERR [SYS/TEMP]"), r)
        c.send("RETR 3\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        self.assertEqual(c.multi_raw(), wire_retr(msgs[u[2]]))
        self.assertTrue(c.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(c.cmd("DELE 2").startswith("+OK"))
        r = c.cmd("QUIT")
        self.assertTrue(r.startswith("+OK"), r)   # already gone counts as gone
        self.env.wait_event("logout", user="alice")
        self.assertFilesEqual(self.env, "alice", {u[2]: msgs[u[2]]})
        self.assertTrue(self.daemon.alive())

    def test_message_moved_during_session(self):
        """A mail client moving new/ -> cur/ (adding flags) under an open
        session: the session still reads and deletes the message."""
        msgs = self.setup_alice([simple_message("mv1"), simple_message("mv2")])
        u = list(msgs)
        c = self.login()
        new = self.env.maildir("alice") / "new"
        for p in list(new.iterdir()):
            base = p.name.split(":")[0]
            p.rename(self.env.maildir("alice") / "cur" / (base + ":2,S"))
        c.send("RETR 1\r\n")
        self.assertTrue(c.line().startswith("+OK"))
        self.assertEqual(c.multi_raw(), wire_retr(msgs[u[0]]))
        self.assertTrue(c.cmd("DELE 2").startswith("+OK"))
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        self.env.wait_event("logout", user="alice")
        self.assertFilesEqual(self.env, "alice", {u[0]: msgs[u[0]]})

    def test_uidl_odd_file_names(self):
        """Unique parts that cannot be a UIDL as they are (a space, more
        than 70 octets) still give valid, distinct, stable UIDLs."""
        env = self.env
        env.add_user("alice", PW)
        t = env.ts
        env.deliver("alice", simple_message("space"), name=f"{t + 1}.M1P1.host name")
        env.deliver("alice", simple_message("long"), name=f"{t + 2}." + "L" * 90)
        env.deliver("alice", simple_message("8bit"), name=f"{t + 3}.M3P3.h\u00f6st")
        env.deliver("alice", simple_message("plain"), name=f"{t + 4}.M4P4.host")
        env.start()

        def uidls():
            c = self.login()
            c.send("UIDL\r\n")
            c.line()
            lst = [x.split(" ", 1)[1] for x in c.multi()]
            c.cmd("QUIT")
            return lst

        first = uidls()
        self.assertEqual(len(first), 4)
        self.assertEqual(len(set(first)), 4, first)
        for uid in first:
            self.assertTrue(1 <= len(uid) <= 70, uid)
            self.assertTrue(all(0x21 <= ord(ch) <= 0x7e for ch in uid), uid)
        self.assertEqual(first[3], f"{t + 4}.M4P4.host")
        self.env.wait_event("logout", user="alice")
        self.assertEqual(uidls(), first)

    def test_snapshot_isolation(self):
        msgs = self.setup_alice([simple_message("s1"), simple_message("s2")])
        c = self.login()
        stat = c.cmd("STAT")
        c.send("UIDL\r\n")
        c.line()
        before = c.multi()
        new = self.env.deliver("alice", simple_message("late"))
        cur = self.env.deliver("alice", simple_message("late cur"), folder="cur")
        self.assertEqual(c.cmd("STAT"), stat)
        c.send("UIDL\r\n")
        c.line()
        self.assertEqual(c.multi(), before)
        self.assertTrue(c.cmd("LIST 3").startswith("-ERR"))
        self.assertTrue(c.cmd("RETR 3").startswith("-ERR"))
        self.assertTrue(c.cmd("DELE 3").startswith("-ERR"))
        self.assertTrue(c.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(c.cmd("DELE 2").startswith("+OK"))
        self.assertTrue(c.cmd("RSET").startswith("+OK"))
        self.assertTrue(c.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(c.cmd("DELE 2").startswith("+OK"))
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        self.env.wait_event("logout", user="alice")
        on_disk = self.env.messages("alice")
        self.assertEqual(sorted(on_disk), sorted([uidl_of(new.name), uidl_of(cur.name)]))
        c = self.login()
        self.assertTrue(c.cmd("STAT").startswith("+OK 2 "))

    # ------------------------------------------------------------ UIDL and order
    def test_uidl_stable_and_order(self):
        env = self.env
        env.add_user("alice", PW)
        t = env.ts
        # Delivered out of order, in new/ and cur/, with and without S=/W=.
        files = [
            env.deliver("alice", simple_message("third"), ts=t + 300),
            env.deliver("alice", simple_message("first"), ts=t + 100, folder="cur"),
            env.deliver("alice", simple_message("second"), ts=t + 200, sizes=False),
            env.deliver("alice", simple_message("fourth"), ts=t + 400, folder="cur",
                        sizes=False, flags="RS"),
        ]
        order = [files[1], files[2], files[0], files[3]]
        self.daemon = env.start()

        def uidl_list():
            c = self.login()
            c.send("UIDL\r\n")
            c.line()
            lst = c.multi()
            subjects = []
            for i in range(1, len(lst) + 1):
                c.send(f"TOP {i} 0\r\n")
                c.line()
                subjects += [x for x in c.multi() if x.startswith("Subject:")]
            return c, lst, subjects

        c, first, subjects = uidl_list()
        self.assertEqual(first, [f"{i} {uidl_of(p.name)}" for i, p in enumerate(order, 1)])
        self.assertEqual(subjects, ["Subject: first", "Subject: second",
                                    "Subject: third", "Subject: fourth"])
        for line in first:
            uid = line.split()[1]
            self.assertTrue(1 <= len(uid) <= 70)
            self.assertTrue(all(0x21 <= ord(ch) <= 0x7e for ch in uid))
        c.cmd("QUIT")
        self.env.wait_event("logout", user="alice")
        # Again: the same (the server may have moved new/ to cur/).
        c, second, _ = uidl_list()
        self.assertEqual(second, first)
        c.cmd("DELE 2")
        c.cmd("QUIT")
        self.env.wait_event("logout", user="alice", count=2)
        # After a deletion the others keep their UIDLs, renumbered.
        c, third, _ = uidl_list()
        keep = [first[0], first[2], first[3]]
        self.assertEqual([x.split()[1] for x in third], [x.split()[1] for x in keep])
        self.assertEqual([x.split()[0] for x in third], ["1", "2", "3"])
        c.cmd("QUIT")
        ev = self.env.wait_event("logout", user="alice", count=3)
        self.assertEqual(ev["uidl_digest"], uidl_digest([x.split()[1] for x in keep]))

    # ------------------------------------------------------------ RFC 1939 §10
    def test_rfc1939_example_session(self):
        env = self.env
        env.add_user_line("mrose", "x", extra="apop=tanstaafl")
        m1, m2 = sized_message(120, "one"), sized_message(200, "two")
        env.deliver("mrose", m1)
        env.deliver("mrose", m2)
        env.start(apop="yes")
        c = env.connect()
        self.assertRegex(c.greeting, r"^\+OK .*<.+@.+>")
        r = c.cmd("APOP mrose " + apop_digest(c.greeting, "tanstaafl"))
        self.assertTrue(r.startswith("+OK"), r)
        self.assertIn("2", r)
        self.assertIn("320", r)
        self.assertEqual(c.cmd("STAT"), "+OK 2 320")
        r = c.cmd("LIST")
        self.assertTrue(r.startswith("+OK"))
        self.assertEqual(c.multi(), ["1 120", "2 200"])
        self.assertEqual(c.cmd("RETR 1"), "+OK 120 octets")
        self.assertEqual(c.multi_raw(), wire_retr(m1))
        self.assertTrue(c.cmd("DELE 1").startswith("+OK"))
        self.assertEqual(c.cmd("RETR 2"), "+OK 200 octets")
        self.assertEqual(c.multi_raw(), wire_retr(m2))
        self.assertTrue(c.cmd("DELE 2").startswith("+OK"))
        r = c.cmd("QUIT")
        self.assertTrue(r.startswith("+OK"), r)
        self.assertIn("empty", r.lower())
        self.assertTrue(c.is_closed())
        ev = env.wait_event("logout", user="mrose")
        self.assertEqual((ev["retr"], ev["retr_bytes"], ev["dele"], ev["dele_bytes"]),
                         ("2", "320", "2", "320"))
        self.assertEqual(env.messages("mrose"), {})

    # ------------------------------------------------------------ limits
    def test_max_sessions_per_ip(self):
        self.setup_alice([], max_sessions_per_ip=2)
        a, b = self.env.connect(), self.env.connect()
        c = Client(self.env.port, greeting=False)
        r = c.line()
        self.assertTrue(r.startswith("-ERR [SYS/TEMP]"), r)
        self.assertTrue(c.is_closed())
        self.env.wait_event("refused", reason="max_sessions_per_ip")
        self.assertTrue(a.cmd("QUIT").startswith("+OK"))
        a.is_closed()
        time.sleep(0.2)
        d = self.env.connect()
        self.assertTrue(d.greeting.startswith("+OK"))
        for x in (b, c, d):
            x.close()

    def test_max_sessions(self):
        self.setup_alice([], max_sessions=1)
        a = self.env.connect()
        c = Client(self.env.port, greeting=False)
        r = c.line()
        self.assertTrue(r.startswith("-ERR [SYS/TEMP]"), r)
        self.assertTrue(c.is_closed())
        self.env.wait_event("refused", reason="max_sessions")
        a.close()

    def test_login_timeout(self):
        self.setup_alice([], login_timeout=10)
        c = self.env.connect(timeout=20)
        t = time.monotonic()
        data = c.read_all(timeout=20)
        took = time.monotonic() - t
        # Not closed before the timeout; that it was the timeout that
        # closed it (within read_all's 20 s) the log says below.
        self.assertGreaterEqual(took, 9, "closed before login_timeout")
        self.assertTrue(data == b"" or data.startswith(b"-ERR"), data)
        ev = self.env.wait_event("logout")
        self.assertEqual(ev["reason"], "timeout")


if __name__ == "__main__":
    unittest.main()
