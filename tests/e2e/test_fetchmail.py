"""test_fetchmail.py: poboxd driven by fetchmail (Debian's fetchmail) with
an MDA that stores each message in a file, in keep and delete modes, with
USER/PASS and APOP."""

import os
import subprocess
import unittest

from harness import PoboxTestCase, need_tool, simple_message, uidl_of

PW = "fetch-pass"


class FetchmailTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        self.fetchmail = need_tool(self, "fetchmail")
        self.env.add_user("alice", PW)
        self.msgs = [
            simple_message("fm one"),
            simple_message("fm dots", ".dot\n..\n.\nend\n"),
            simple_message("fm 8bit", "\u0159\u00ed\u0161e \u017elu\u0165ou\u010dk\u00fd k\u016f\u0148\n"),
            simple_message("fm big", "".join(f"{'.' if i % 7 == 0 else ''}line {i}\n"
                                             for i in range(20000))),
        ]
        self.uidls = [uidl_of(self.env.deliver("alice", m).name) for m in self.msgs]
        self.out = self.env.cli / "out"
        self.out.mkdir()
        self.mda = self.env.cli / "deliver.sh"
        self.mda.write_text(f'#!/bin/sh\nexec cat > "$(mktemp {self.out}/msg.XXXXXX)"\n')
        os.chmod(self.mda, 0o755)

    def fetched(self):
        return sorted(p.read_bytes() for p in self.out.iterdir())

    def run_fetchmail(self, keep, user="alice", pw=PW, proto="POP3", auth="password"):
        rc = self.env.cli / "fetchmailrc"
        cli = self.env.cli
        rc.write_text(
            "set no syslog\n"
            "set invisible\n"   # no Received: header: compare bytes
            f'set pidfile "{cli}/fetchmail.pid"\n'
            f'set idfile "{cli}/fetchids"\n'
            f'poll 127.0.0.1 with proto {proto} service {self.env.port} '
            f"auth {auth} timeout 15 uidl\n"
            f'  user "{user}" there with password "{pw}" is "root" here\n'
            f"  options no rewrite {'keep' if keep else 'no keep fetchall'}"
            " sslproto ''\n"
            f'  mda "{self.mda}"\n')
        os.chmod(rc, 0o600)
        env = dict(os.environ, FETCHMAILHOME=str(cli), HOME=str(cli))
        return subprocess.run([self.fetchmail, "--nosyslog", "-f", str(rc)],
                              capture_output=True, text=True, timeout=90,
                              env=env, stdin=subprocess.DEVNULL)

    def test_keep(self):
        self.env.start()
        r = self.run_fetchmail(keep=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.fetched(), sorted(self.msgs))
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["reason"], "quit")
        self.assertEqual(ev["dele"], "0")
        self.assertFilesEqual(self.env, "alice", dict(zip(self.uidls, self.msgs)))
        # With UIDLs remembered, nothing is new on a second run (exit 1).
        r = self.run_fetchmail(keep=True)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(len(self.fetched()), 4)

    def test_delete(self):
        self.env.start()
        r = self.run_fetchmail(keep=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.fetched(), sorted(self.msgs))
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["dele"], "4")
        self.assertEqual(self.env.messages("alice"), {})
        r = self.run_fetchmail(keep=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)   # no mail

    def test_apop(self):
        self.env.add_user_line("mrose", "x", extra="apop=tanstaafl")
        m = simple_message("fm apop")
        self.env.deliver("mrose", m)
        self.env.start(apop="yes")
        r = self.run_fetchmail(keep=False, user="mrose", pw="tanstaafl",
                               proto="APOP", auth="any")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.fetched(), [m])
        self.env.wait_event("login", user="mrose", method="apop")
        self.env.wait_event("logout", user="mrose")
        self.assertEqual(self.env.messages("mrose"), {})


if __name__ == "__main__":
    unittest.main()
