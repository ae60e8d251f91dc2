"""test_poplib.py: poboxd driven by Python's poplib, a client nobody here
wrote; checks what it receives against the files on disk."""

import poplib
import unittest

from harness import (PoboxTestCase, crlf, simple_message, uidl_of, wire_body,
                     wire_top)

PW = "hunter2"


class PoplibTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        self.env.add_user("alice", PW)
        self.msgs = [
            simple_message("plain"),
            simple_message("dots", ".leading dot\n..two dots\n.\nend\n"),
            simple_message("utf8", "Gr\u00fc\u00dfe aus K\u00f6ln \u2603\n"),
            b"Subject: crlf stored\r\n\r\nalready CRLF\r\nsecond\r\n",
            b"Subject: no final newline\n\nlast line",
        ]
        self.uidls = []
        for m in self.msgs:
            self.uidls.append(uidl_of(self.env.deliver("alice", m).name))

    def pop(self, **settings):
        if not self.env.daemons:
            self.env.start(**settings)
        p = poplib.POP3("127.0.0.1", self.env.port, timeout=10)
        self.addCleanup(p.close)
        return p

    def test_login_stat_list_uidl(self):
        p = self.pop()
        self.assertTrue(p.getwelcome().startswith(b"+OK"))
        caps = p.capa()
        for c in ("TOP", "UIDL", "USER", "PIPELINING", "RESP-CODES"):
            self.assertIn(c, caps)
        p.user("alice")
        p.pass_(PW)
        sizes = [len(crlf(m)) for m in self.msgs]
        # The last message has no final newline: its size may count the
        # CRLF the server adds on the wire.
        count, total = p.stat()
        self.assertEqual(count, 5)
        self.assertIn(total, (sum(sizes), sum(sizes) + 2))
        resp, lines, _ = p.list()
        self.assertEqual(lines[:4], [f"{i} {s}".encode() for i, s in enumerate(sizes[:4], 1)])
        self.assertEqual(lines[4], f"5 {sizes[4] + total - sum(sizes)}".encode())
        self.assertEqual(p.list(2), f"+OK 2 {sizes[1]}".encode())
        resp, lines, _ = p.uidl()
        self.assertEqual(lines, [f"{i} {u}".encode() for i, u in enumerate(self.uidls, 1)])
        self.assertEqual(p.uidl(3), f"+OK 3 {self.uidls[2]}".encode())
        p.quit()
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["reason"], "quit")
        self.assertEqual(ev["dele"], "0")

    def test_retr_byte_exact(self):
        p = self.pop()
        p.user("alice")
        p.pass_(PW)
        for i, m in enumerate(self.msgs, 1):
            resp, lines, octets = p.retr(i)
            got = b"".join(line + b"\r\n" for line in lines)
            self.assertEqual(got, wire_body(m), f"message {i}")
            self.assertEqual(octets, len(wire_body(m)))
            size = int(resp.split()[1])
            self.assertIn(size, (len(crlf(m)), len(wire_body(m))))
        p.quit()
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["retr"], "5")
        # RETR changes nothing on disk.
        on_disk = self.env.messages("alice")
        self.assertEqual([on_disk[u] for u in self.uidls], self.msgs)

    def test_top(self):
        p = self.pop()
        p.user("alice")
        p.pass_(PW)
        for n in (0, 1, 3):
            resp, lines, _ = p.top(2, n)
            self.assertEqual(b"".join(x + b"\r\n" for x in lines), wire_top(self.msgs[1], n))
        p.quit()

    def test_dele_quit_removes_files(self):
        p = self.pop()
        p.user("alice")
        p.pass_(PW)
        p.dele(1)
        p.dele(3)
        self.assertEqual(len(self.env.messages("alice")), 5, "deleted before QUIT")
        with self.assertRaises(poplib.error_proto):
            p.retr(1)
        p.quit()
        self.env.wait_event("logout", user="alice")
        left = self.env.messages("alice")
        self.assertEqual(sorted(left), sorted([self.uidls[1], self.uidls[3], self.uidls[4]]))
        p = poplib.POP3("127.0.0.1", self.env.port, timeout=10)
        p.user("alice")
        p.pass_(PW)
        self.assertEqual(p.stat()[0], 3)
        resp, lines, _ = p.uidl()
        self.assertEqual([x.split()[1].decode() for x in lines],
                         [self.uidls[1], self.uidls[3], self.uidls[4]])
        p.quit()

    def test_rset(self):
        p = self.pop()
        p.user("alice")
        p.pass_(PW)
        p.dele(1)
        p.dele(2)
        self.assertEqual(p.stat()[0], 3)
        p.rset()
        self.assertEqual(p.stat()[0], 5)
        p.quit()
        self.env.wait_event("logout", user="alice")
        self.assertEqual(len(self.env.messages("alice")), 5)

    def test_bad_password(self):
        p = self.pop()
        p.user("alice")
        with self.assertRaises(poplib.error_proto) as cm:
            p.pass_("nope")
        self.assertIn(b"[AUTH]", cm.exception.args[0])

    def test_apop(self):
        self.env.add_user_line("mrose", "x", extra="apop=tanstaafl")
        m = simple_message("for mrose")
        u = uidl_of(self.env.deliver("mrose", m).name)
        p = self.pop(apop="yes")
        p.apop("mrose", "tanstaafl")
        self.assertEqual(p.stat(), (1, len(crlf(m))))
        resp, lines, _ = p.retr(1)
        self.assertEqual(b"".join(x + b"\r\n" for x in lines), crlf(m))
        p.dele(1)
        p.quit()
        self.env.wait_event("login", user="mrose", method="apop")
        self.env.wait_event("logout", user="mrose")
        self.assertNotIn(u, self.env.messages("mrose"))
        p = poplib.POP3("127.0.0.1", self.env.port, timeout=10)
        with self.assertRaises(poplib.error_proto):
            p.apop("mrose", "wrong")
        p.close()


if __name__ == "__main__":
    unittest.main()
