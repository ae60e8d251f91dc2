"""test_smtp_faults.py: the receivers under faults. SIGKILL of poboxd at
random instants while messages arrive and are delivered: each message is
in new/ whole or not at all, never twice from one transaction, and every
message the client got 250 for is there. A small tmpfs that fills up:
temporary failures (4xx) and nothing left behind. Two workers sharing the
LMTP UNIX socket, one killed while mail streams in."""

import os
import random
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
from pathlib import Path

from harness import IS_ROOT, POBOXD, TIMEOUT, PoboxTestCase, chown_tree, free_port

TRIALS = 30


def body_for(tag, size):
    """A CRLF message whose text is derived from tag, about size octets."""
    head = f"Subject: {tag}\r\nMessage-ID: <{tag}@test>\r\n\r\n".encode()
    line = (tag.encode() + b" " + bytes(range(0x21, 0x7f))) * 3
    line = line[:900] + b"\r\n"
    n = max(1, size // len(line))
    return head + line * n


def dot_stuff(body):
    return re.sub(rb"(?m)^\.", b"..", body)


def split_trace(data):
    i = data.find(b"\r\n\tfor <")
    j = data.find(b"\r\n", i + 2)
    return data[:j + 2], data[j + 2:]


def stored_messages(tc, md):
    """{tag: [bodies]} of the files in new/, each checked whole."""
    out = {}
    for p in sorted((Path(md) / "new").iterdir()):
        data = p.read_bytes()
        m = re.search(r",S=(\d+),W=(\d+)$", p.name)
        tc.assertIsNotNone(m, p.name)
        tc.assertEqual(int(m.group(1)), len(data), f"partial file {p.name}")
        head, rest = split_trace(data)
        tc.assertTrue(head.startswith(b"Return-Path: <s@example.net>\r\n"))
        tag = re.search(rb"Subject: (\S+)\r\n", rest).group(1).decode()
        out.setdefault(tag, []).append(rest)
    return out


class SmtpFaultTest(PoboxTestCase):

    def start(self, **settings):
        env = self.env
        self.smtp_port = free_port()
        env.settings.update({"local_domains": "example.org",
                             "hostname": "mx.example.org"})
        env.settings.update({k: str(v) for k, v in settings.items()})
        env.extra_lines = [f"smtp_listen = 127.0.0.1:{self.smtp_port}"]
        d = env.start()
        env.wait_event("listening", proto="smtp",
                       addr=f"127.0.0.1:{self.smtp_port}")
        return d

    def send(self, body, rcpts=("alice@example.org",), result=None):
        """One transaction over a raw socket, pipelined; result[0] gets the
        final reply code (None when the connection died first)."""
        s = socket.create_connection(("127.0.0.1", self.smtp_port), TIMEOUT)
        f = s.makefile("rb")
        code = None
        try:
            f.readline()
            s.sendall(b"EHLO c.example.net\r\n")
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            cmds = b"MAIL FROM:<s@example.net>\r\n" + b"".join(
                b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts) + b"DATA\r\n"
            s.sendall(cmds)
            for _ in range(len(rcpts) + 2):
                line = f.readline()
            if not line.startswith(b"354"):
                return int(line[:3]) if line[:3].isdigit() else None
            s.sendall(dot_stuff(body) + b".\r\n")
            line = f.readline()
            code = int(line[:3]) if line[:3].isdigit() else None
            if code is not None:
                s.sendall(b"QUIT\r\n")
                f.readline()
        except OSError:
            pass
        finally:
            if result is not None:
                result.append(code)
            f.close()
            s.close()
        return code

    def test_sigkill_during_data_and_delivery(self):
        mds = [self.env.add_user("alice", "pw"), self.env.add_user("bob", "pw")]
        rng = random.Random(os.environ.get("E2E_SEED", "4"))
        acked, sent = {}, {}
        for trial in range(TRIALS):
            d = self.start()
            tag = f"trial{trial}"
            size = rng.choice([2000, 60000, 300000, 1500000])
            # Odd trials go to two maildirs (one file, hard-linked).
            rcpts = ("alice@example.org", "bob@example.org")[:1 + trial % 2]
            body = body_for(tag, size)
            sent[tag] = body
            result = []
            t = threading.Thread(target=self.send, args=(body, rcpts),
                                 kwargs={"result": result})
            t.start()
            time.sleep(rng.uniform(0.0, 0.03 if size < 100000 else 0.12))
            os.kill(d.pid, signal.SIGKILL)
            d.proc.wait(TIMEOUT)
            t.join(TIMEOUT)
            self.assertFalse(t.is_alive())
            if result and result[0] == 250:
                acked[tag] = len(rcpts)
        stored = [stored_messages(self, md) for md in mds]
        for box in stored:
            for tag, bodies in box.items():
                self.assertEqual(len(bodies), 1, f"{tag} delivered twice")
                self.assertEqual(bodies[0], sent[tag], f"{tag} altered")
        for tag, n in acked.items():
            for box in stored[:n]:
                self.assertIn(tag, box, f"{tag} acknowledged but lost")
        print(f"\n  sigkill: {TRIALS} trials, {len(acked)} acknowledged, "
              f"{len(stored[0])}+{len(stored[1])} stored", end=" ")

    def test_enospc_small_tmpfs(self):
        if not IS_ROOT:
            self.skipTest("mounting a tmpfs needs root")
        mnt = self.env.dir / "small"
        mnt.mkdir()
        uid = 65534
        r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                            f"size=640k,mode=0755,uid={uid},gid={uid}",
                            "tmpfs", str(mnt)], capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest(f"mount tmpfs failed: {r.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", str(mnt)],
                        capture_output=True)
        md = mnt / "alice"
        self.env.add_user_line("alice", "pw", maildir=md)
        chown_tree(md)
        self.start()
        codes = []
        for i, size in enumerate([100000] * 4 + [300000] * 3 + [30000] * 8):
            codes.append(self.send(body_for(f"m{i}", size)))
        self.assertIn(250, codes)
        self.assertTrue(all(c in (250, 451, 452) for c in codes), codes)
        self.assertTrue(any(c in (451, 452) for c in codes), codes)
        # Nothing behind in tmp/; new/ holds exactly the acknowledged ones.
        self.assertEqual(list((md / "tmp").iterdir()), [])
        stored = stored_messages(self, md)
        self.assertEqual(len(stored), codes.count(250))
        self.env.wait_event("delivery_failed")


class SmtpWorkersTest(PoboxTestCase):
    """Two workers share the LMTP UNIX socket; SIGKILL of one while mail
    streams in loses nothing acknowledged, and its replacement serves."""

    def test_worker_killed_lmtp_socket_shared(self):
        from harness import wait_for
        md = self.env.add_user("alice", "pw")
        sock = self.env.srv / "lmtp.sock"
        self.env.settings.update({"local_domains": "example.org",
                                  "workers": "2"})
        self.env.extra_lines = [f"lmtp_listen = {sock}"]
        d = self.env.start()
        # The mail processes serve LMTP (two, and two login processes).
        kids = wait_for(lambda: len(d.roles()["mail"]) == 2 and sorted(d.roles()["mail"]),
                        "two mail processes")
        self.env.wait_event("listening", addr=str(sock), proto="lmtp")
        acked, stop = [], threading.Event()

        # Bounded by stop, and by a count no run reaches: with 400 each,
        # all 1200 were sometimes delivered before the replacement worker
        # was up (1 s), and nothing was left to deliver "after the kill".
        def stream(n0):
            for i in range(n0, n0 + 4000):
                if stop.is_set():
                    return
                tag = f"w{i}"
                try:
                    lm = smtplib.LMTP(str(sock), timeout=TIMEOUT)
                    try:
                        if lm.sendmail("s@example.net", ["alice@example.org"],
                                       body_for(tag, 20000)) == {}:
                            acked.append(tag)
                    finally:
                        lm.close()
                except (smtplib.SMTPException, OSError):
                    pass

        ts = [threading.Thread(target=stream, args=(k * 10000,)) for k in range(3)]
        for t in ts:
            t.start()
        wait_for(lambda: len(acked) >= 10, "some deliveries", timeout=60)
        os.kill(kids[0], signal.SIGKILL)
        wait_for(lambda: len(d.roles()["mail"]) == 2 and kids[0] not in d.roles()["mail"],
                 "a replacement mail process", timeout=60)
        n = len(acked)
        wait_for(lambda: len(acked) >= n + 10, "deliveries after the kill",
                 timeout=60)
        stop.set()
        for t in ts:
            t.join(TIMEOUT * 3)
        stored = stored_messages(self, md)
        for tag, bodies in stored.items():
            self.assertEqual(len(bodies), 1, tag)
            self.assertEqual(bodies[0], body_for(tag, 20000))
        self.assertTrue(set(acked) <= set(stored))
        self.env.wait_event("worker_died")


def data_code(port, rcpts, body, timeout=TIMEOUT):
    """The reply code to the end of DATA for one SMTP transaction."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
        s.ehlo("c.example.net")
        s.mail("s@example.net")
        for r in rcpts:
            s.rcpt(r)
        try:
            return s.data(body)[0]
        except smtplib.SMTPDataError as e:
            return e.smtp_code


def start_with_iofault(tc, mode="", users=("alice",), settings=None,
                       extra_lines=()):
    """Starts tc.env's poboxd (SMTP on a free port, local domain
    example.org, users with password "pw", settings and extra_lines added)
    with the LD_PRELOAD shim tests/e2e/faults/iofault.c in mode on the
    maildir of the last user; returns (that maildir, control file, port).
    Skips under ASan."""
    if "address" in os.environ.get("SANITIZE", "") or \
            b"libasan" in subprocess.run(["ldd", str(POBOXD)],
                                         capture_output=True).stdout:
        tc.skipTest("LD_PRELOAD shim and ASan do not mix")
    shim = tc.env.dir / "iofault.so"
    src = Path(__file__).resolve().parent / "faults" / "iofault.c"
    r = subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(shim),
                        str(src), "-ldl"], capture_output=True, text=True)
    if r.returncode != 0:
        tc.skipTest(f"cannot build the shim: {r.stderr}")
    os.chmod(tc.env.dir, 0o755)
    ctl = tc.env.dir / "iofault.ctl"
    ctl.write_text(mode)
    os.chmod(ctl, 0o644)
    for u in users:
        md = tc.env.add_user(u, "pw")
    port = free_port()
    tc.env.settings.update({"local_domains": "example.org", **(settings or {})})
    tc.env.extra_lines = [f"smtp_listen = 127.0.0.1:{port}", *extra_lines]
    keys = ("LD_PRELOAD", "IOFAULT_CTL", "IOFAULT_MAILDIR")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["LD_PRELOAD"] = str(shim)
    os.environ["IOFAULT_CTL"] = str(ctl)
    os.environ["IOFAULT_MAILDIR"] = os.path.realpath(md)
    try:
        tc.env.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return md, ctl, port


class SmtpIoFaultTest(PoboxTestCase):
    """EIO from write(2), fsync(2) of the message and fsync(2) of new/,
    through an LD_PRELOAD shim (tests/e2e/faults/iofault.c): each gives
    451 and leaves nothing in tmp/ or new/; the retry then succeeds."""

    def test_eio_write_fsync(self):
        md, ctl, port = start_with_iofault(self)
        self.env.wait_event("listening", proto="smtp")
        for mode, size in (("write", 2000), ("write", 600000),
                           ("fsync_file", 2000), ("fsync_file", 600000),
                           ("fsync_dir", 2000)):
            with self.subTest(mode=mode, size=size):
                body = body_for(f"{mode}{size}", size)
                ctl.write_text(mode)
                self.assertEqual(data_code(port, ["alice@example.org"], body), 451)
                self.assertEqual(list((md / "tmp").iterdir()), [])
                self.assertEqual(list((md / "new").iterdir()), [])
                ctl.write_text("")
                with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
                    s.sendmail("s@example.net", ["alice@example.org"], body)
                stored = stored_messages(self, md)
                self.assertEqual(list(stored.values()), [[body]])
                for p in (md / "new").iterdir():
                    p.unlink()
        ev = self.env.events("delivery_failed")
        self.assertTrue(any("Input/output error" in e.get("error", "")
                            for e in ev), ev)

    def test_slow_delivery_outlasts_timeout(self):
        """A delivery slower than smtp_timeout (the fsync of new/ stalls)
        is answered 250, not 421 4.4.2 with the message stored: the
        client waits on us, it is not idle."""
        md, ctl, port = start_with_iofault(self, "slow_dir",
                                           settings={"smtp_timeout": "10"})
        self.env.wait_event("listening", proto="smtp")
        body = body_for("slow", 2000)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("c.example.net")
            s.mail("s@example.net")
            s.rcpt("alice@example.org")
            self.assertEqual(s.data(body)[0], 250)
            self.assertEqual(s.noop()[0], 250)
        self.assertEqual(list(stored_messages(self, md).values()), [[body]])

    def test_tempfail_keeps_nothing_for_other_rcpts(self):
        """SMTP has one reply for all recipients: when bob's delivery fails
        (fsync of his new/), the 451 must leave alice without a copy too,
        or the client's retry gives her a second one. Same in LMTP for
        the users of one alias."""
        aliases = self.env.srv / "aliases"
        aliases.write_text("team@example.org: alice, bob\n")
        lport = free_port()
        bob, ctl, port = start_with_iofault(
            self, "fsync_dir", users=("alice", "bob"),
            settings={"aliases_file": str(aliases)},
            extra_lines=[f"lmtp_listen = 127.0.0.1:{lport}"])
        alice = self.env.maildir("alice")
        self.env.wait_event("listening", proto="smtp")
        body = body_for("both", 2000)
        self.assertEqual(data_code(port, ["alice@example.org", "bob@example.org"],
                                   body), 451)
        self.assertEqual(list((alice / "new").iterdir()), [])
        self.assertEqual(list((bob / "new").iterdir()), [])
        lm = smtplib.LMTP("127.0.0.1", lport, timeout=TIMEOUT)
        try:
            lm.ehlo("mta.example.net")
            lm.mail("s@example.net")
            self.assertEqual(lm.rcpt("team@example.org")[0], 250)
            code, _ = lm.data(body)
            self.assertEqual(code, 451)
        finally:
            lm.quit()
        self.assertEqual(list((alice / "new").iterdir()), [])
        # Once bob's disk is well, the retry delivers one copy each.
        ctl.write_text("")
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
            s.sendmail("s@example.net", ["alice@example.org", "bob@example.org"],
                       body)
        self.assertEqual(list(stored_messages(self, alice).values()), [[body]])
        self.assertEqual(list(stored_messages(self, bob).values()), [[body]])


class SmtpShutdownTest(PoboxTestCase):
    """SIGTERM while a delivery runs: the message is kept, so the client
    must hear 250 for it (then 421), not a 421 that makes it send the
    message again."""

    def test_sigterm_closes_pop3_while_deliveries_drain(self):
        """SIGTERM ends POP3 sessions without UPDATE at once, even while
        the mail process waits for an SMTP delivery to finish: a QUIT
        sent in that window deletes nothing."""
        md, ctl, port = start_with_iofault(self, users=("bob", "alice"))
        d = self.env.daemons[-1]
        bob = self.env.maildir("bob")
        self.env.deliver("bob", b"Subject: keep\r\n\r\nkeep me\r\n")
        self.env.wait_event("listening", proto="smtp")
        c = self.env.connect()
        c.login("bob", "pw")
        self.assertTrue(c.ok("STAT").startswith("+OK 1 "))
        ctl.write_text("slow_dir")   # alice's new/ fsync takes 12 s
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            f = sock.makefile("rb")
            self.assertTrue(f.readline().startswith(b"220"))
            sock.sendall(b"HELO c.example.net\r\nMAIL FROM:<s@example.net>\r\n"
                         b"RCPT TO:<alice@example.org>\r\nDATA\r\n")
            for code in (b"250", b"250", b"250", b"354"):
                self.assertTrue(f.readline().startswith(code))
            sock.sendall(b"Subject: x\r\n\r\nslow\r\n.\r\n")
            end = time.monotonic() + TIMEOUT
            while not list((md / "new").iterdir()):
                self.assertLess(time.monotonic(), end, "no delivery in new/")
                time.sleep(0.02)
            d.signal(signal.SIGTERM)
            self.env.wait_event("shutdown", signal="Terminated", count=2)
            try:
                c.send("DELE 1\r\nQUIT\r\n")
                replies = [c.line(), c.line()]
            except Exception:
                replies = []
            self.assertFalse(any(r.startswith("+OK") for r in replies[1:]), replies)
            sock.settimeout(30)      # the delivery still waits for new/
            self.assertTrue(f.readline().startswith(b"250"))
        c.close()
        self.assertEqual(d.proc.wait(TIMEOUT * 3), 0)
        self.assertEqual(len(list((bob / "new").iterdir()) + list((bob / "cur").iterdir())), 1)
        self.assertEqual(self.env.events("logout", user="bob")[0]["update"], "none")

    def test_sigterm_answers_the_delivery_in_flight(self):
        md, ctl, port = start_with_iofault(self)
        d = self.env.daemons[-1]
        self.env.wait_event("listening", proto="smtp")
        ctl.write_text("fsync_slow")
        body = body_for("drain", 2000)
        with socket.create_connection(("127.0.0.1", port),
                                      timeout=TIMEOUT) as sock:
            f = sock.makefile("rb")
            self.assertTrue(f.readline().startswith(b"220"))
            sock.sendall(b"HELO c.example.net\r\n")
            self.assertTrue(f.readline().startswith(b"250"))
            sock.sendall(b"MAIL FROM:<s@example.net>\r\n"
                         b"RCPT TO:<alice@example.org>\r\nDATA\r\n")
            for code in (b"250", b"250", b"354"):
                self.assertTrue(f.readline().startswith(code))
            sock.sendall(dot_stuff(body) + b".\r\n")
            # The shim holds the fsync of the file in tmp/: a delivery
            # is in flight once it shows there.
            end = time.monotonic() + TIMEOUT
            while not list((md / "tmp").iterdir()):
                self.assertLess(time.monotonic(), end, "no delivery started")
                time.sleep(0.02)
            d.signal(signal.SIGTERM)
            self.assertTrue(f.readline().startswith(b"250 2.0.0"))
            self.assertTrue(f.readline().startswith(b"421 4.3.2"))
        self.assertEqual(d.proc.wait(TIMEOUT), 0)
        stored = stored_messages(self, md)
        self.assertEqual(list(stored.values()), [[body]])
        self.assertEqual(list((md / "tmp").iterdir()), [])
