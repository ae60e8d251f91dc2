"""test_curl.py: poboxd driven by curl's POP3 client (list, retrieve,
custom UIDL and DELE), compared with the maildir on disk."""

import subprocess
import unittest

from harness import PoboxTestCase, crlf, need_tool, simple_message, uidl_of

PW = "curl pass:word"


class CurlTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        self.curl_bin = need_tool(self, "curl")
        self.env.add_user("alice", PW)
        self.msgs = [
            simple_message("curl one"),
            simple_message("curl dots", ".dot line\n..\n.\nafter\n"),
            simple_message("curl utf8", "\u00e9t\u00e9 \u00e0 Z\u00fcrich\n"),
        ]
        self.uidls = [uidl_of(self.env.deliver("alice", m).name) for m in self.msgs]
        self.env.start()

    def curl(self, path="", *args, user="alice", pw=PW):
        url = f"pop3://127.0.0.1:{self.env.port}/{path}"
        return subprocess.run([self.curl_bin, "-sS", "--max-time", "15",
                               "--user", f"{user}:{pw}", *args, url],
                              capture_output=True, timeout=30)

    def test_list(self):
        r = self.curl()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"".join(
            f"{i} {len(crlf(m))}\r\n".encode() for i, m in enumerate(self.msgs, 1)))
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["reason"], "quit")

    def test_retrieve(self):
        for i, m in enumerate(self.msgs, 1):
            r = self.curl(str(i))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, crlf(m), f"message {i}")
        self.env.wait_event("logout", user="alice", count=3)
        ev = self.env.events("logout", user="alice")
        self.assertEqual([e["retr"] for e in ev], ["1", "1", "1"])
        self.assertEqual([e["dele"] for e in ev], ["0", "0", "0"])
        self.assertEqual(sorted(self.env.messages("alice")), sorted(self.uidls))

    def test_uidl(self):
        r = self.curl("", "-X", "UIDL")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"".join(
            f"{i} {u}\r\n".encode() for i, u in enumerate(self.uidls, 1)))

    def test_dele(self):
        r = self.curl("2", "-X", "DELE", "-I")
        self.assertEqual(r.returncode, 0, r.stderr)
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["dele"], "1")
        self.assertEqual(sorted(self.env.messages("alice")),
                         sorted([self.uidls[0], self.uidls[2]]))
        r = self.curl("2")
        self.assertEqual(r.stdout, crlf(self.msgs[2]))

    def test_bad_password(self):
        r = self.curl("", user="alice", pw="wrong")
        self.assertEqual(r.returncode, 67, (r.returncode, r.stderr))  # LOGIN_DENIED
        self.env.wait_event("login_failed", user="alice", reason="bad_password")


if __name__ == "__main__":
    unittest.main()
