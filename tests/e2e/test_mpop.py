"""test_mpop.py: poboxd driven by mpop (Debian's mpop) delivering into a
local maildir, in keep and delete modes, with USER/PASS and APOP."""

import os
import subprocess
import unittest

from harness import PoboxTestCase, need_tool, simple_message, uidl_of

PW = "mpop-pass"


def fetched(maildir):
    """The messages mpop delivered, as a sorted list of bytes."""
    out = []
    for sub in ("new", "cur"):
        d = maildir / sub
        for n in os.listdir(d):
            out.append((d / n).read_bytes())
    return sorted(out)


class MpopTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        self.mpop = need_tool(self, "mpop")
        self.env.add_user("alice", PW)
        # LF line ends, as in any maildir; mpop stores what it got with LF.
        self.msgs = [
            simple_message("mpop one"),
            simple_message("mpop dots", ".a dot line\n..\n.\nlast\n"),
            simple_message("mpop 8bit", "\u00c4pfel und \u00d6l, \u00fcberall \u20ac\n"),
            simple_message("mpop big", "".join(f"line {i} {'.' * (i % 3)}\n"
                                               for i in range(20000))),
        ]
        self.uidls = [uidl_of(self.env.deliver("alice", m).name) for m in self.msgs]
        self.inbox = self.env.cli / "inbox"
        for sub in ("cur", "new", "tmp"):
            (self.inbox / sub).mkdir(parents=True)

    def run_mpop(self, keep, user="alice", pw=PW, auth="user", extra=""):
        rc = self.env.cli / "mpoprc"
        rc.write_text(
            "defaults\n"
            "tls off\n"
            "timeout 15\n"
            "received_header off\n"
            f"uidls_file {self.env.cli / 'uidls'}\n"
            "account e2e\n"
            "host 127.0.0.1\n"
            f"port {self.env.port}\n"
            f"user {user}\n"
            f"password {pw}\n"
            f"auth {auth}\n"
            f"delivery maildir {self.inbox}\n"
            f"keep {'on' if keep else 'off'}\n" + extra)
        os.chmod(rc, 0o600)
        return subprocess.run([self.mpop, "-C", str(rc), "-Q", "e2e"],
                              capture_output=True, text=True, timeout=60)

    def test_keep(self):
        self.env.start()
        r = self.run_mpop(keep=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(fetched(self.inbox), sorted(self.msgs))
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["reason"], "quit")
        self.assertEqual(ev["dele"], "0")
        self.assertEqual(ev["retr"], "4")
        # Nothing deleted on the server; a second run fetches nothing new
        # (mpop keeps UIDLs: they must be stable across sessions).
        self.assertFilesEqual(self.env, "alice", dict(zip(self.uidls, self.msgs)))
        r = self.run_mpop(keep=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(len(fetched(self.inbox)), 4)
        ev = self.env.wait_event("logout", user="alice", count=2)
        self.assertEqual(ev["retr"], "0")
        # New mail: only it is fetched.
        late = simple_message("mpop late")
        self.env.deliver("alice", late)
        r = self.run_mpop(keep=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(fetched(self.inbox), sorted(self.msgs + [late]))

    def test_delete(self):
        self.env.start()
        r = self.run_mpop(keep=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(fetched(self.inbox), sorted(self.msgs))
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["dele"], "4")
        self.assertEqual(self.env.messages("alice"), {})

    def test_apop(self):
        self.env.add_user_line("mrose", "x", extra="apop=tanstaafl")
        m = simple_message("mpop apop")
        self.env.deliver("mrose", m)
        self.env.start(apop="yes")
        r = self.run_mpop(keep=False, user="mrose", pw="tanstaafl", auth="apop")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(fetched(self.inbox), [m])
        self.env.wait_event("login", user="mrose", method="apop")
        self.env.wait_event("logout", user="mrose")
        self.assertEqual(self.env.messages("mrose"), {})

    def test_bad_password(self):
        self.env.start()
        r = self.run_mpop(keep=True, pw="wrong")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(fetched(self.inbox), [])
        self.env.wait_event("login_failed", user="alice")


if __name__ == "__main__":
    unittest.main()
