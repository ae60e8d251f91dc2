"""test_deliver.py: `pobox deliver`, the MDA, with real stdin: what lands
in the Maildir (prepended headers, "From " line dropped, S=/W= in the
name, owner), what a real POP3 client (poplib) then retrieves from poboxd
byte for byte, the sysexits codes (67, 65, 64, 75) with nothing left
behind on failure (a new/ that is a file, a full tmpfs), and a delivery
during an open POP3 session."""

import os
import poplib
import pwd
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from harness import (IS_ROOT, POBOX, UNPRIV_USER, PoboxTestCase, crlf,
                     simple_message, uidl_of, wire_body)

PW = "deliver-pw"
NAME_RE = re.compile(r"^(\d+\.M\d{6}P\d+Q\d+R[0-9a-f]{16}\.[!-~]*)"
                     r",S=(\d+),W=(\d+)$")


class DeliverTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        self.env.add_user("alice", PW)

    def run_deliver(self, *args, data=b"", config_first=True):
        """pobox [-c CONF] deliver ARGS with data on stdin (bytes)."""
        if config_first:
            cmd = [str(POBOX), "-c", str(self.env.conf), "deliver", *args]
        else:
            cmd = [str(POBOX), "deliver", *args, "-c", str(self.env.conf)]
        return subprocess.run(cmd, input=data, capture_output=True,
                              timeout=60)

    def new_files(self, user="alice", sub="new"):
        d = self.env.maildir(user) / sub
        return sorted(p.name for p in d.iterdir())

    def only_new(self, user="alice"):
        names = self.new_files(user)
        self.assertEqual(len(names), 1, names)
        return self.env.maildir(user) / "new" / names[0]

    def assert_nothing_left(self, user="alice"):
        for sub in ("new", "tmp", "cur"):
            d = self.env.maildir(user) / sub
            if d.is_dir():
                self.assertEqual(list(d.iterdir()), [], sub)

    def pop(self):
        p = poplib.POP3("127.0.0.1", self.env.port, timeout=10)
        self.addCleanup(p.close)
        p.user("alice")
        p.pass_(PW)
        return p

    def test_deliver_then_retr_byte_exact(self):
        body = ("Gr\u00fc\u00dfe \u2603\n.leading dot\n..two\n.\n"
                "mixed\r\nends\rhere\n").encode() + bytes(range(256)) + b"\n"
        msg = simple_message("delivered", "x") + body
        envelope = b"From sender@example.org Tue Nov 14 22:13:20 2023\n"
        r = self.run_deliver("-u", "alice", "-f", "sender@example.org",
                             data=envelope + msg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, b"")
        stored = (b"Return-Path: <sender@example.org>\n"
                  b"Delivered-To: alice\n") + msg
        path = self.only_new()
        self.assertEqual(path.read_bytes(), stored)
        self.assertEqual(self.new_files(sub="tmp"), [])
        m = NAME_RE.match(path.name)
        self.assertIsNotNone(m, path.name)
        self.assertLessEqual(len(m.group(1)), 70)
        self.assertEqual(int(m.group(2)), len(stored))
        self.assertEqual(int(m.group(3)), len(crlf(stored)))
        st = path.stat()
        self.assertEqual(st.st_mode & 0o777, 0o600)
        if IS_ROOT:
            self.assertEqual(st.st_uid, pwd.getpwnam(UNPRIV_USER).pw_uid)
        self.env.start()
        p = self.pop()
        self.assertEqual(p.stat(), (1, len(crlf(stored))))
        self.assertEqual(p.uidl(1).split()[2].decode(), m.group(1))
        resp, lines, octets = p.retr(1)
        got = b"".join(line + b"\r\n" for line in lines)
        self.assertEqual(got, wire_body(stored))
        p.quit()

    def test_stale_tmp_files_are_swept(self):
        # A delivery killed mid-write leaves its file in tmp/; after 36
        # hours (the Maildir convention) the next delivery removes it, a
        # younger one (maybe still being written) stays.
        tmp = self.env.maildir("alice") / "tmp"
        stale, fresh = tmp / "1.M1P1.host", tmp / "2.M2P2.host"
        for p in (stale, fresh):
            p.write_bytes(b"Subject: partial\n")
        old = time.time() - 37 * 3600
        os.utime(stale, (old, old))
        r = self.run_deliver("-u", "alice", data=b"Subject: x\n\nbody\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(p.name for p in tmp.iterdir()), [fresh.name])
        self.assertEqual(len(self.new_files()), 1)

    def test_crlf_message_and_null_sender(self):
        msg = b"Subject: crlf\r\n\r\nline one\r\nline two\r\n"
        for args in (("-f", ""), (), ("-f", "<>")):
            r = self.run_deliver("-u", "alice", *args, data=msg,
                                 config_first=False)
            self.assertEqual(r.returncode, 0, r.stderr)
            path = self.only_new()
            # Our header lines use the message's line ends.
            self.assertEqual(path.read_bytes(),
                             b"Return-Path: <>\r\nDelivered-To: alice\r\n" + msg)
            path.unlink()

    def test_from_line_only_stripped_at_start(self):
        msg = b"Subject: s\n\nFrom here on, body.\n>From quoted\n"
        r = self.run_deliver("-u", "alice", "-f", "<a@b.example>",
                             data=b"From a@b.example  Mon Jan  1 00:00:00 2024\r\n" + msg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.only_new().read_bytes(),
                         b"Return-Path: <a@b.example>\nDelivered-To: alice\n" + msg)

    def test_unknown_user(self):
        for user in ("bob", "../alice", "x" * 65):
            r = self.run_deliver("-u", user, data=simple_message("nobody"))
            self.assertEqual(r.returncode, 67, (user, r.stderr))
            self.assertEqual(len(r.stderr.decode().splitlines()), 1, r.stderr)
            self.assertIn("unknown user", r.stderr.decode())
        self.assert_nothing_left()

    def test_usage_and_data_errors(self):
        for args in ((), ("-u",), ("-u", "alice", "extra"), ("-x",),
                     ("-u", "alice", "-f", "a@b\nX-Injected: 1")):
            r = self.run_deliver(*args, data=b"Subject: x\n\nx\n")
            self.assertEqual(r.returncode, 64, (args, r.stderr))
        for data in (b"", b"From a@b Mon Jan  1 00:00:00 2024\n"):
            r = self.run_deliver("-u", "alice", data=data)
            self.assertEqual(r.returncode, 65, (data, r.stderr))
            self.assertIn(b"empty message", r.stderr)
        self.assert_nothing_left()

    def test_new_is_a_file_tempfails(self):
        md = self.env.maildir("alice")
        (md / "new").rmdir()
        (md / "new").write_bytes(b"not a directory\n")
        r = self.run_deliver("-u", "alice", data=simple_message("blocked"))
        self.assertEqual(r.returncode, 75, r.stderr)
        self.assertEqual(len(r.stderr.decode().splitlines()), 1, r.stderr)
        self.assertIn("new", r.stderr.decode())
        self.assertEqual(self.new_files(sub="tmp"), [])
        self.assertEqual((md / "new").read_bytes(), b"not a directory\n")

    def test_full_filesystem_tempfails_and_leaves_nothing(self):
        if not IS_ROOT:
            self.skipTest("mounting a tmpfs needs root")
        mnt = self.env.srv / "tiny"
        mnt.mkdir()
        pw = pwd.getpwnam(UNPRIV_USER)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                            f"size=64k,mode=0700,uid={pw.pw_uid},gid={pw.pw_gid}",
                            "tmpfs", str(mnt)], capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs: {r.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", str(mnt)])
        self.env.add_user_line("tiny", PW, maildir=mnt)
        big = b"Subject: big\n\n" + b"0123456789abcdef\n" * 20000   # 340 KB
        r = self.run_deliver("-u", "tiny", data=big)
        self.assertEqual(r.returncode, 75, r.stderr)
        self.assertIn("No space left on device", r.stderr.decode())
        for sub in ("new", "tmp", "cur"):
            self.assertEqual(list((mnt / sub).iterdir()), [], sub)
        # The space came back: a small message fits.
        small = simple_message("fits")
        r = self.run_deliver("-u", "tiny", data=small)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(list((mnt / "new").iterdir())), 1)

    def test_delivery_during_open_session(self):
        old = [simple_message("old one"), simple_message("old two")]
        uidls = [uidl_of(self.env.deliver("alice", m).name) for m in old]
        self.env.start()
        p = self.pop()
        self.assertEqual(p.stat()[0], 2)
        new = simple_message("arrives during the session")
        r = self.run_deliver("-u", "alice", "-f", "s@example.org", data=new)
        self.assertEqual(r.returncode, 0, r.stderr)
        new_path = [self.env.maildir("alice") / "new" / n
                    for n in self.new_files() if uidl_of(n) not in uidls]
        self.assertEqual(len(new_path), 1)
        # Invisible to the session that is open...
        self.assertEqual(p.stat()[0], 2)
        self.assertEqual([x.split()[1].decode() for x in p.uidl()[1]], uidls)
        p.dele(1)
        p.dele(2)
        p.quit()
        self.env.wait_event("logout", user="alice")
        # ...and it survives that session's UPDATE.
        stored = b"Return-Path: <s@example.org>\nDelivered-To: alice\n" + new
        self.assertEqual(self.env.messages("alice"),
                         {uidl_of(new_path[0].name): stored})
        p = self.pop()
        self.assertEqual(p.stat(), (1, len(crlf(stored))))
        resp, lines, _ = p.retr(1)
        self.assertEqual(b"".join(x + b"\r\n" for x in lines), wire_body(stored))
        p.quit()

    def test_concurrent_deliveries_unique_and_timed(self):
        msgs = [simple_message(f"parallel {i}") for i in range(40)]
        with ThreadPoolExecutor(8) as ex:
            rcs = list(ex.map(lambda m: self.run_deliver("-u", "alice", data=m),
                              msgs))
        self.assertEqual([r.returncode for r in rcs], [0] * len(msgs),
                         [r.stderr for r in rcs if r.returncode])
        names = self.new_files()
        self.assertEqual(len(names), len(msgs))
        self.assertEqual(len({uidl_of(n) for n in names}), len(msgs))
        bodies = sorted(self.env.messages("alice").values())
        self.assertEqual(bodies, sorted(b"Return-Path: <>\nDelivered-To: alice\n"
                                        + m for m in msgs))
        # Figures, not a test: one `pobox deliver` run (exec, config,
        # passwd file, fsyncs) after another.
        n = 20
        t0 = time.monotonic()
        for i in range(n):
            self.assertEqual(self.run_deliver(
                "-u", "alice", data=sized(10240, i)).returncode, 0)
        per = (time.monotonic() - t0) / n * 1000
        print(f"\n    pobox deliver: {per:.2f} ms per 10 KB message "
              f"(sequential, fsync on)", end=" ", flush=True)


def sized(size, i):
    head = f"Subject: timed {i}\n\n".encode()
    return head + b"x" * (size - len(head) - 1) + b"\n"


if __name__ == "__main__":
    import unittest
    unittest.main()
