"""test_postfix.py: Postfix from Debian as the real peer in front of pobox.

Each test starts its own Postfix (own config directory, queue and log under
the test's temp dir, no chroot, smtpd on a free loopback port) whose
transport_maps hand the test domain to poboxd over LMTP, on TCP
(lmtp:inet:127.0.0.1:PORT) or on a UNIX socket (lmtp:unix:/path). Mail goes
in with smtplib to Postfix and comes out with poplib from poboxd, compared
byte for byte. Postfix's master is stopped by its PID. Needs root (Postfix's
master starts as root) and the pobox SMTP/LMTP receiver; without the
receiver in the build the tests skip and say so."""

import os
import poplib
import re
import shutil
import signal
import smtplib
import subprocess
import time
import unittest
from pathlib import Path

from harness import (CI, IS_ROOT, POBOXD, UNPRIV_USER, PoboxTestCase,
                     TIMEOUT, free_port, listening)

POSTFIX = "/usr/sbin/postfix"
MASTER = "/usr/lib/postfix/sbin/master"
DOMAIN = "pobox.test"
DRAIN_TIMEOUT = 30.0   # seconds for Postfix's queue to empty
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

# Debian's master.cf services, without chroot, smtpd on one address.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup     unix  n - n 60   1 pickup
cleanup    unix  n - n -    0 cleanup
qmgr       unix  n - n 300  1 qmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
verify     unix  - - n -    1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -    - proxymap
proxywrite unix  - - n -    1 proxymap
smtp       unix  - - n -    - smtp
relay      unix  - - n -    - smtp
showq      unix  n - n -    - showq
error      unix  - - n -    - error
retry      unix  - - n -    - error
discard    unix  - - n -    - discard
lmtp       unix  - {lmtp_unpriv} n -    - lmtp
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """One Postfix instance under base/, started with `postfix -c DIR
    start` and stopped by its master's PID."""

    def __init__(self, base, transport, lmtp_unpriv=True):
        self.base = Path(base)
        self.conf = self.base / "conf"
        self.queue = self.base / "queue"
        self.data = self.base / "data"
        self.log_path = self.base / "postfix.log"
        for d in (self.conf, self.queue, self.data):
            d.mkdir(parents=True)
        shutil.chown(self.data, "postfix")
        self.port = free_port()
        self.pid = None
        # relay_domains + transport_maps: the test domain goes to pobox
        # over LMTP; no recipient map, so pobox alone says who exists
        # and a refused recipient becomes a bounce.
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self.log_path}
maillog_file_prefixes = {self.base}/
myhostname = mx.postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_domains = {DOMAIN}
relay_recipient_maps =
transport_maps = inline:{{ {DOMAIN}={transport} }}
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtputf8_enable = no
""")
        (self.conf / "master.cf").write_text(
            MASTER_CF.format(listen=f"127.0.0.1:{self.port}",
                             lmtp_unpriv="-" if lmtp_unpriv else "n"))

    def start(self):
        r = subprocess.run([POSTFIX, "-c", str(self.conf), "start"],
                           capture_output=True, text=True, timeout=60)
        pidfile = self.queue / "pid" / "master.pid"
        if r.returncode != 0 or not pidfile.exists():
            raise AssertionError(f"postfix start failed ({r.returncode}): "
                                 f"{r.stdout}{r.stderr}{self.log_text()}")
        self.pid = int(pidfile.read_text().strip())
        end = time.monotonic() + TIMEOUT
        while not listening(self.port):
            if time.monotonic() > end:
                raise AssertionError("postfix not listening; log:\n" +
                                     self.log_text())
            time.sleep(0.05)

    def _alive(self):
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    def stop(self):
        """SIGTERM to the master (it ends its children), SIGKILL after
        10 s."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
            end = time.monotonic() + 10
            while self._alive() and time.monotonic() < end:
                time.sleep(0.05)
            if self._alive():
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.pid = None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def queued(self):
        """Queue files still waiting (any queue but the done ones)."""
        n = 0
        for q in QUEUES:
            for _, _, files in os.walk(self.queue / q):
                n += len(files)
        return n

    def wait_drained(self, sent=1, timeout=DRAIN_TIMEOUT):
        """Waits until the queue is empty and `sent` delivery attempts
        were logged as final (sent or bounced); returns the log."""
        end = time.monotonic() + timeout
        while True:
            log = self.log_text()
            done = log.count("status=sent") + log.count("status=bounced")
            if self.queued() == 0 and done >= sent:
                return log
            if time.monotonic() > end:
                raise AssertionError(
                    f"Postfix queue not drained in {timeout}s "
                    f"({self.queued()} queued); log:\n{log[-4000:]}")
            time.sleep(0.05)

    def send(self, sender, rcpts, msg):
        with smtplib.SMTP("127.0.0.1", self.port, timeout=TIMEOUT) as s:
            refused = s.sendmail(sender, rcpts, msg,
                                 mail_options=["BODY=8BITMIME"])
        if refused:
            raise AssertionError(f"Postfix refused {refused}")


def crlf_message(subject, body):
    """A CRLF message: (header block with its final empty line, body)."""
    head = (f"From: Sender <sender@{DOMAIN}>\r\n"
            f"To: Alice <alice@{DOMAIN}>\r\n"
            f"Subject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@client.test>\r\n"
            f"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n"
            f"\r\n").encode()
    return head, body


# A body that survives two hops only if nobody alters it: leading dots
# (dot-stuffing on both hops), 8-bit UTF-8, trailing white space, a tab,
# empty lines, a 998-octet line, and "From " (no mbox quoting).
BODY = ("Hello Alice,\r\n"
        ".\r\n"
        "..two dots\r\n"
        ".one dot\r\n"
        "From the start of a line\r\n"
        "trailing spaces   \r\n"
        "\ttab first\r\n"
        "\r\n"
        "\r\n"
        "gr\u00fc\u00dfe, \u65e5\u672c\u8a9e, \u20ac 10\r\n").encode() + \
    b"x" * 998 + b"\r\n" + b"the end\r\n"


class PostfixLmtpTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        if not IS_ROOT:
            self.skipTest("Postfix's master must start as root")
        if not (os.access(POSTFIX, os.X_OK) and os.access(MASTER, os.X_OK)):
            msg = "Postfix is not installed (scripts/deps installs it)"
            if CI:
                self.fail(msg)
            self.skipTest(msg)
        self.lmtp_port = free_port()
        self.sock = self.env.dir / "run" / "lmtp.sock"
        self.sock.parent.mkdir()
        shutil.chown(self.sock.parent, UNPRIV_USER)
        self.env.extra_lines += [
            f"lmtp_listen = 127.0.0.1:{self.lmtp_port}",
            f"lmtp_listen = {self.sock}",
            f"local_domains = {DOMAIN}",
        ]
        self.need_receiver()
        for user in ("alice", "bob", "sender"):
            self.env.add_user(user, "pw-" + user)

    def need_receiver(self):
        """Skips when this poboxd has no LMTP receiver (lmtp_listen is an
        unknown setting); any other config error fails the test."""
        conf = self.env.write_config()
        r = subprocess.run([str(POBOXD), "-n", "-c", str(conf)],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0 and "lmtp_listen" in r.stderr and \
                "unknown setting" in r.stderr:
            self.skipTest("no SMTP/LMTP receiver in this poboxd build "
                          f"({r.stderr.strip()})")
        self.assertEqual(r.returncode, 0, f"poboxd -n: {r.stderr}")

    def postfix(self, transport, **kw):
        pf = Postfix(self.env.dir / "postfix", transport, **kw)
        self.addCleanup(pf.stop)
        pf.start()
        return pf

    def retr_all(self, user):
        """Every message of user's maildrop via poplib, as CRLF bytes."""
        p = poplib.POP3("127.0.0.1", self.env.port, timeout=TIMEOUT)
        try:
            p.user(user)
            p.pass_("pw-" + user)
            n = len(p.list()[1])
            out = []
            for i in range(1, n + 1):
                _, lines, _ = p.retr(i)   # dot-unstuffed by poplib
                out.append(b"".join(line + b"\r\n" for line in lines))
            p.quit()
        finally:
            p.close()
        return out

    def assert_delivered(self, got, head, body, rcpt):
        self.assertIn(b"\r\n\r\n", got)
        got_head, got_body = got.split(b"\r\n\r\n", 1)
        got_head += b"\r\n\r\n"
        # The body exactly; the sender's header block exactly, at the end
        # of what Postfix and pobox prepended.
        self.assertEqual(got_body, body)
        self.assertTrue(got_head.endswith(head),
                        "header block changed:\n" +
                        got_head.decode(errors="replace"))
        added = got_head[:-len(head)].decode(errors="replace")
        self.assertRegex(added, r"(?m)^Return-Path: <sender@pobox\.test>\r$")
        self.assertRegex(added, rf"(?mi)^Delivered-To: {rcpt}(@{DOMAIN})?\r$")
        self.assertRegex(added, r"\bwith LMTP\b")   # RFC 3848
        self.assertIn("by mx.postfix.test (Postfix)", added)

    def check_byte_for_byte(self, transport, **kw):
        self.env.start()
        pf = self.postfix(transport, **kw)
        head, body = crlf_message("via postfix", BODY)
        pf.send(f"sender@{DOMAIN}", [f"alice@{DOMAIN}"], head + body)
        log = pf.wait_drained()
        self.assertIn(f"to=<alice@{DOMAIN}>, relay=", log)
        self.assertRegex(log, r"to=<alice@pobox\.test>, relay=.*"
                              r"dsn=2\.\d\.\d, status=sent")
        msgs = self.retr_all("alice")
        self.assertEqual(len(msgs), 1)
        self.assert_delivered(msgs[0], head, body, "alice")
        self.assertEqual(self.retr_all("bob"), [])

    def test_lmtp_inet_byte_for_byte(self):
        self.check_byte_for_byte(f"lmtp:inet:127.0.0.1:{self.lmtp_port}")

    def test_lmtp_unix_byte_for_byte(self):
        # poboxd makes its socket 0660, owned by the serving user: in
        # production the postfix user joins that user's group; here
        # Postfix's lmtp(8) runs as root instead (master.cf unpriv = n)
        # rather than change the system's groups.
        self.check_byte_for_byte(f"lmtp:unix:{self.sock}", lmtp_unpriv=False)

    def test_many_messages_each_once(self):
        """30 messages in one SMTP session to Postfix, alternating two
        users: Postfix reuses its LMTP connections; each message arrives
        once, intact."""
        self.env.start()
        pf = self.postfix(f"lmtp:inet:127.0.0.1:{self.lmtp_port}")
        sent = {}
        with smtplib.SMTP("127.0.0.1", pf.port, timeout=TIMEOUT) as s:
            for i in range(30):
                user = ("alice", "bob")[i % 2]
                head, body = crlf_message(f"message {i}",
                                          BODY + f"number {i}\r\n".encode())
                self.assertEqual(s.sendmail(f"sender@{DOMAIN}",
                                            [f"{user}@{DOMAIN}"], head + body,
                                            mail_options=["BODY=8BITMIME"]),
                                 {})
                sent[f"message {i}"] = (user, head, body)
        pf.wait_drained(sent=30)
        got = {}
        for user in ("alice", "bob"):
            for m in self.retr_all(user):
                subj = re.search(rb"(?m)^Subject: (.*)\r$", m).group(1)
                self.assertNotIn(subj.decode(), got, "delivered twice")
                got[subj.decode()] = (user, m)
        self.assertEqual(sorted(got), sorted(sent))
        for subj, (user, head, body) in sent.items():
            self.assertEqual(got[subj][0], user)
            self.assert_delivered(got[subj][1], head, body, user)

    def test_large_message(self):
        """1.5 MB through Postfix and LMTP (past poboxd's in-memory
        spool), 8-bit lines among base64 ones, byte for byte."""
        self.env.start()
        pf = self.postfix(f"lmtp:unix:{self.sock}", lmtp_unpriv=False)
        line = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9w"
                b"cXJzdHV2d3h5ejAx\r\n")
        chunks = []
        for i in range(21000):
            chunks.append(line if i % 100 else
                          f".{i} gr\u00fc\u00dfe \u00e9t\u00e9\r\n".encode())
        body = b"".join(chunks)
        self.assertGreater(len(body), 1_500_000)
        head, body = crlf_message("large", body)
        pf.send(f"sender@{DOMAIN}", [f"alice@{DOMAIN}"], head + body)
        pf.wait_drained()
        msgs = self.retr_all("alice")
        self.assertEqual(len(msgs), 1)
        self.assert_delivered(msgs[0], head, body, "alice")

    def test_unknown_recipient_bounces_5_1_1(self):
        """One transaction, two known recipients and one unknown: LMTP
        refuses the unknown one (550 5.1.1), Postfix bounces it to the
        sender (a pobox user too), the others get one copy each."""
        self.env.start()
        pf = self.postfix(f"lmtp:inet:127.0.0.1:{self.lmtp_port}")
        head, body = crlf_message("mixed recipients", BODY)
        pf.send(f"sender@{DOMAIN}", [f"alice@{DOMAIN}", f"nosuch@{DOMAIN}",
                                     f"bob@{DOMAIN}"], head + body)
        # 3 recipients, then the bounce to sender: 4 final lines.
        log = pf.wait_drained(sent=4)
        self.assertRegex(log, r"to=<nosuch@pobox\.test>, relay=.*"
                              r"dsn=5\.1\.1, status=bounced")
        self.assertNotRegex(log, r"to=<nosuch@pobox\.test>.*status=sent")
        for user in ("alice", "bob"):
            msgs = self.retr_all(user)
            self.assertEqual(len(msgs), 1, user)
            # One copy per recipient, each naming its own (Dovecot,
            # for one, writes none with several recipients).
            self.assert_delivered(msgs[0], head, body, user)
        self.assertFalse((self.env.mail_root / "nosuch").exists())
        bounces = self.retr_all("sender")
        self.assertEqual(len(bounces), 1)
        text = bounces[0].decode(errors="replace")
        self.assertRegex(text, r"(?m)^Return-Path: <>\r$")
        self.assertIn(f"nosuch@{DOMAIN}", text)
        self.assertIn("5.1.1", text)


if __name__ == "__main__":
    unittest.main()
