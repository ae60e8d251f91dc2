"""test_smtpbench.py: bench/smtpbench against poboxd's receivers, for
correctness only (bench/deliver prints the figures): every delivery it
counts is on disk exactly once, intact, over SMTP and LMTP, pipelined or
not, on TCP and a UNIX socket, with several recipients per message; refused
recipients are counted as errors and nothing is kept for them. Skips while
poboxd has no SMTP/LMTP receiver."""

import re
import shutil
import subprocess

from harness import (CI, IS_ROOT, POBOXD, REPO, UNPRIV_USER, PoboxTestCase,
                     free_port)

DOMAIN = "example.net"
NAME_SIZE = re.compile(r",S=(\d+)")


def field(line, name):
    m = re.search(rf"\b{name}=(\S+)", line)
    if m is None:
        raise AssertionError(f"no {name}= in {line!r}")
    return m.group(1)


class SmtpbenchTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        cc = shutil.which("cc")
        if cc is None:
            if CI:
                self.fail("no C compiler")
            self.skipTest("no C compiler")
        self.smtp_port = free_port()
        self.lmtp_port = free_port()
        self.sock = self.env.dir / "run" / "lmtp.sock"
        self.sock.parent.mkdir()
        if IS_ROOT:
            shutil.chown(self.sock.parent, UNPRIV_USER)
        self.env.extra_lines += [
            f"smtp_listen = 127.0.0.1:{self.smtp_port}",
            f"lmtp_listen = 127.0.0.1:{self.lmtp_port}",
            f"lmtp_listen = {self.sock}",
            f"local_domains = {DOMAIN}",
        ]
        conf = self.env.write_config()
        r = subprocess.run([str(POBOXD), "-n", "-c", str(conf)],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0 and "unknown setting" in r.stderr and \
                "_listen" in r.stderr:
            self.skipTest("no SMTP/LMTP receiver in this poboxd build "
                          f"({r.stderr.strip()})")
        self.assertEqual(r.returncode, 0, f"poboxd -n: {r.stderr}")
        self.bin = self.env.dir / "smtpbench"
        b = subprocess.run([cc, "-O2", "-o", str(self.bin),
                            str(REPO / "bench" / "smtpbench.c")],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(b.returncode, 0, b.stderr)
        self.users = [f"u{i}" for i in range(1, 5)]
        for u in self.users:
            self.env.add_user(u, "pw-" + u)

    def bench(self, *args):
        r = subprocess.run([str(self.bin), "-u", "u", "-d", DOMAIN,
                            "-t", "60", *args],
                           capture_output=True, text=True, timeout=150)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stdout)
        return lines[0], r.stderr

    def on_disk(self):
        """{Message-ID: [(user, bytes)]} of everything in new/ and cur/."""
        out = {}
        for u in self.users:
            for sub in ("new", "cur"):
                for p in (self.env.maildir(u) / sub).iterdir():
                    data = p.read_bytes()
                    m = NAME_SIZE.search(p.name)
                    self.assertIsNotNone(m, p.name)
                    self.assertEqual(int(m.group(1)), len(data), p.name)
                    mid = re.search(rb"(?m)^Message-ID: (<[^>]+>)\r?$", data)
                    self.assertIsNotNone(mid, p.name)
                    out.setdefault(mid.group(1).decode(), []).append(
                        (u, data))
        return out

    def check_run(self, args, conc, msgs, rcpts, pipelining="yes"):
        self.env.start()
        line, err = self.bench("-c", str(conc), "-m", str(msgs),
                               "-k", str(rcpts), "-U", str(len(self.users)),
                               *args)
        total = conc * msgs
        self.assertEqual(field(line, "err"), "0", line + err)
        self.assertEqual(field(line, "msgs_ok"), str(total), line)
        self.assertEqual(field(line, "deliveries"), str(total * rcpts), line)
        self.assertEqual(field(line, "conns_ok"), str(conc), line)
        self.assertEqual(field(line, "pipelining"), pipelining, line)
        disk = self.on_disk()
        # One Message-ID per message, one copy per recipient, each intact:
        # the body smtpbench sent ends with its last line, unstuffed.
        self.assertEqual(len(disk), total)
        for mid, copies in disk.items():
            self.assertEqual(len(copies), rcpts, mid)
            self.assertEqual(len({u for u, _ in copies}), rcpts, mid)
            for _, data in copies:
                self.assertTrue(data.endswith(b"\n"), mid)
                self.assertNotIn(b"\n..", data.replace(b"\r\n", b"\n"))
        return line

    def test_smtp_pipelined_two_recipients(self):
        self.check_run(["-p", str(self.smtp_port)], 8, 10, 2)

    def test_smtp_one_command_at_a_time(self):
        self.check_run(["-N", "-p", str(self.smtp_port)], 4, 5, 1,
                       pipelining="no")

    def test_lmtp_tcp_three_recipients(self):
        self.check_run(["-L", "-p", str(self.lmtp_port)], 8, 10, 3)

    def test_lmtp_unix_socket(self):
        self.check_run(["-L", "-S", str(self.sock)], 4, 10, 1)

    def test_refused_recipients_are_errors(self):
        """u5 does not exist: the 2 of 10 messages rotated to it are
        refused at RCPT (550 5.1.1) and count as failed; nothing is kept
        for them."""
        self.env.start()
        line, err = self.bench("-L", "-p", str(self.lmtp_port), "-c", "2",
                               "-m", "5", "-U", "5")
        # Messages 0..9 go to u1..u5, u1..u5: u5 twice.
        self.assertEqual(field(line, "deliveries"), "8", line)
        self.assertEqual(field(line, "msgs_failed"), "2", line)
        self.assertEqual(field(line, "err_rcpt"), "2", line)
        self.assertIn("5.1.1", err)
        self.assertEqual(sum(len(c) for c in self.on_disk().values()), 8)
        self.assertFalse((self.env.mail_root / "u5").exists())
