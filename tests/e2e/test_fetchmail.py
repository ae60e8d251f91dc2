"""test_fetchmail.py: poboxd driven by fetchmail (Debian's fetchmail) with
an MDA that stores each message in a file, in keep and delete modes, with
USER/PASS and APOP, in the clear and over TLS (POP3S and STLS, the server
verified against a test CA)."""

import os
import subprocess
import unittest

from harness import PoboxTestCase, free_port, need_tool, simple_message, uidl_of
from test_tls import make_pki

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

    def run_fetchmail(self, keep, user="alice", pw=PW, proto="POP3", auth="password",
                      tls="", port=None, host="127.0.0.1"):
        """tls: "" (clear), or fetchmail's TLS options (ssl, sslproto,
        sslcertck, sslcertfile, ...) for port."""
        rc = self.env.cli / "fetchmailrc"
        cli = self.env.cli
        rc.write_text(
            "set no syslog\n"
            "set invisible\n"   # no Received: header: compare bytes
            f'set pidfile "{cli}/fetchmail.pid"\n'
            f'set idfile "{cli}/fetchids"\n'
            f'poll {host} with proto {proto} service {port or self.env.port} '
            f"auth {auth} timeout 15 uidl\n"
            f'  user "{user}" there with password "{pw}" is "root" here\n'
            f"  options no rewrite {'keep' if keep else 'no keep fetchall'}"
            f" {tls or 'sslproto ' + repr('')}\n"
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


class FetchmailTlsTest(FetchmailTest):
    """fetchmail over implicit TLS (--ssl) and over STLS (--sslproto
    tls1.2+), verifying the server against the test CA (--sslcertck
    --sslcertfile); the mail compared byte for byte."""

    def setUp(self):
        super().setUp()
        need_tool(self, "openssl")
        self.ca, cert, key = make_pki(self.env.srv / "tls")
        self.tls_port = free_port()
        self.env.settings.update(tls_cert=str(cert), tls_key=str(key))
        self.env.extra_lines.append(f"tls_listen = 127.0.0.1:{self.tls_port}")

    def tls_opts(self, *opts):
        # fetchmail checks DNS names only: the certificate's is localhost.
        return " ".join(opts) + f' sslcertck sslcertfile "{self.ca}" sslcommonname localhost'

    def check_fetched(self, r, tls_events):
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.fetched(), sorted(self.msgs))
        ev = self.env.wait_event("logout", user="alice", count=tls_events)
        self.assertEqual(ev["reason"], "quit")
        tls = self.env.events("tls")
        self.assertEqual(len(tls), tls_events)
        self.assertIn(tls[-1]["version"], ("TLSv1.2", "TLSv1.3"))

    def test_keep(self):
        # Implicit TLS (POP3S), keep: all four, then nothing new.
        self.env.start()
        r = self.run_fetchmail(keep=True, port=self.tls_port, tls=self.tls_opts("ssl"))
        self.check_fetched(r, 1)
        self.assertEqual(self.env.wait_event("connect", tls="yes")["tls"], "yes")
        self.assertFilesEqual(self.env, "alice", dict(zip(self.uidls, self.msgs)))
        r = self.run_fetchmail(keep=True, port=self.tls_port, tls=self.tls_opts("ssl"))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)

    def test_delete(self):
        # STLS made mandatory by sslproto tls1.2+ on the clear port.
        self.env.start()
        r = self.run_fetchmail(keep=False, tls=self.tls_opts("sslproto tls1.2+"))
        self.check_fetched(r, 1)
        self.assertEqual(self.env.events("connect", tls="yes"), [])
        self.assertEqual(self.env.wait_event("logout", user="alice")["dele"], "4")
        self.assertEqual(self.env.messages("alice"), {})

    # APOP is covered in the clear (FetchmailTest); not inherited here.
    test_apop = None

    def test_tls13_only(self):
        self.env.start(tls_min_version="TLSv1.3")
        r = self.run_fetchmail(keep=True, port=self.tls_port,
                               tls=self.tls_opts("ssl", "sslproto tls1.3+"))
        self.check_fetched(r, 1)
        self.assertEqual(self.env.events("tls")[0]["version"], "TLSv1.3")

    def test_wrong_ca_refused(self):
        # Another CA: fetchmail must refuse the server and fetch nothing.
        other_ca, _, _ = make_pki(self.env.dir / "other")
        self.env.start()
        for tls in (f'ssl sslcertck sslcertfile "{other_ca}" sslcommonname localhost',
                    f'sslproto tls1.2+ sslcertck sslcertfile "{other_ca}" '
                    "sslcommonname localhost"):
            with self.subTest(tls=tls):
                r = self.run_fetchmail(keep=True, tls=tls,
                                       port=self.tls_port if tls.startswith("ssl ") else None)
                self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertEqual(self.fetched(), [])
        self.assertEqual(self.env.events("login"), [])


if __name__ == "__main__":
    unittest.main()
