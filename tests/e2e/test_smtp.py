"""test_smtp.py: poboxd's SMTP and LMTP receivers end to end: Python
smtplib (with and without PIPELINING, SMTPUTF8, 8BITMIME, SIZE), BDAT over
a raw socket, swaks, LMTP over TCP and a UNIX socket, STARTTLS with
certificate verification, relay and unknown users refused, quotas, the
LF.LF smuggling variants, long lines, too many errors; the mail is then
collected with poplib from the same poboxd and compared byte for byte."""

import os
import poplib
import re
import select
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

from harness import (IS_ROOT, POBOXD, TIMEOUT, PoboxTestCase, chown_tree,
                     free_port, non_loopback_ipv4)

CRLF_MSG = (b"From: Sender <sender@example.org>\r\n"
            b"To: alice@example.org\r\n"
            b"Subject: hello\r\n"
            b"\r\n"
            b"Body line one.\r\n"
            b".leading dot\r\n"
            b"8-bit: \xc3\xa9t\xc3\xa9 \xff\xfe\r\n")


def crlfify(data):
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


class SmtpClient:
    """A raw SMTP/LMTP client for what smtplib cannot send (BDAT, bare
    LF, over-long lines)."""

    def __init__(self, port=None, path=None, timeout=TIMEOUT):
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.f = self.sock.makefile("rb")
        self.greeting = self.reply()

    def close(self):
        self.f.close()
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """One whole reply: (code, [lines])."""
        lines = []
        while True:
            line = self.f.readline(2048)
            if not line:
                raise AssertionError(f"connection closed; got {lines}")
            lines.append(line.rstrip(b"\r\n").decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def closed(self):
        try:
            return self.f.read() == b""
        except OSError:
            return True


class SmtpBase(PoboxTestCase):

    def setUp(self):
        super().setUp()
        self.smtp_port = free_port()
        self.lmtp_port = free_port()
        self.alice_md = self.env.add_user("alice", "alicepw")
        self.bob_md = self.env.add_user("bob", "bobpw")

    def start(self, lmtp=True, extra=(), **settings):
        env = self.env
        env.settings.update({"local_domains": "example.org",
                             "hostname": "mx.example.org",
                             "max_bad_commands": "10"})
        env.settings.update({k: str(v) for k, v in settings.items()})
        env.extra_lines = [f"smtp_listen = 127.0.0.1:{self.smtp_port}"]
        if lmtp:
            env.extra_lines.append(f"lmtp_listen = 127.0.0.1:{self.lmtp_port}")
        env.extra_lines += list(extra)
        d = env.start()
        env.wait_event("listening", addr=f"127.0.0.1:{self.smtp_port}",
                       proto="smtp")
        return d

    def files(self, md, sub="new"):
        d = Path(md) / sub
        return sorted(d.iterdir()) if d.is_dir() else []

    def pop_all(self, user, password, delete=False):
        p = poplib.POP3("127.0.0.1", self.env.port, timeout=TIMEOUT)
        p.user(user)
        p.pass_(password)
        out = []
        for i in range(1, len(p.list()[1]) + 1):
            out.append(b"\r\n".join(p.retr(i)[1]) + b"\r\n")
            if delete:
                p.dele(i)
        p.quit()
        return out

    def header_block(self, data):
        """The prepended trace headers and the rest."""
        i = data.find(b"Received: ")
        j = data.find(b"\r\n", data.find(b"\r\n\tfor <", i) + 2)
        return data[:j + 2], data[j + 2:]

    def assertDelivered(self, md, body, rcpt, sender, count=1):
        files = self.files(md)
        self.assertEqual(len(files), count, files)
        data = files[-1].read_bytes()
        head, rest = self.header_block(data)
        self.assertEqual(rest, body)
        self.assertTrue(head.startswith(
            f"Return-Path: <{sender}>\r\nDelivered-To: {rcpt}\r\n"
            f"Received: from ".encode()), head)
        self.assertIn(b"by mx.example.org (pobox) with ", head)
        self.assertIn(f"\tfor <{rcpt}>; ".encode(), head)
        # ,S= and ,W= tell the real sizes.
        m = re.search(r",S=(\d+),W=(\d+)$", files[-1].name)
        self.assertEqual(int(m.group(1)), len(data))
        self.assertEqual(int(m.group(2)), len(crlfify(data)))
        return data



def drip(c, pieces, pause=3):
    """Sends pieces one at a time, pause seconds apart, until the server
    answers (its reply) or closes; None when it never did."""
    for piece in pieces:
        try:
            c.send(piece)
        except OSError:
            return None
        r, _, _ = select.select([c.sock], [], [], pause)
        if r:
            return c.reply()
    return None

class SmtpTest(SmtpBase):

    def test_smtplib_and_pop3_byte_exact(self):
        self.start()
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            code, ehlo = s.ehlo("client.example.net")
            self.assertEqual(code, 250)
            for ext in ("pipelining", "8bitmime", "size", "smtputf8",
                        "chunking", "enhancedstatuscodes"):
                self.assertTrue(s.has_extn(ext), ext)
            self.assertFalse(s.has_extn("starttls"))   # no tls_cert
            self.assertEqual(s.esmtp_features["size"], str(50 << 20))
            refused = s.sendmail("sender@example.net",
                                 ["alice@example.org", "Bob@EXAMPLE.ORG"],
                                 CRLF_MSG, mail_options=["BODY=8BITMIME"])
            self.assertEqual(refused, {})
        self.env.wait_event("delivered", count=2)
        a = self.assertDelivered(self.alice_md, CRLF_MSG, "alice@example.org",
                                 "sender@example.net")
        self.assertDelivered(self.bob_md, CRLF_MSG, "Bob@EXAMPLE.ORG",
                             "sender@example.net")
        self.assertIn(b"with ESMTP id ", a)
        self.assertIn(b"from client.example.net ([127.0.0.1])", a)
        # POP3 from the same daemon: the stored octets, exactly.
        got = self.pop_all("alice", "alicepw")
        self.assertEqual(got, [a])

    def test_pipelining_whole_session_in_one_write(self):
        """RFC 2920: two transactions, RSET and QUIT in one write; the
        replies come in order, each message is delivered once."""
        self.start()
        c = SmtpClient(self.smtp_port)
        m1 = b"Subject: one\r\n\r\n.dot\r\n"
        m2 = b"Subject: two\r\n\r\ntwo\r\n"
        c.send(b"EHLO c.example.net\r\n"
               b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
               b"RCPT TO:<nobody@example.org>\r\nDATA\r\n" +
               m1.replace(b"\r\n.", b"\r\n..") + b".\r\n"
               b"RSET\r\n"
               b"MAIL FROM:<b@example.net>\r\nRCPT TO:<bob@example.org>\r\n"
               b"DATA\r\n" + m2 + b".\r\nQUIT\r\n")
        codes = [c.reply()[0] for _ in range(11)]
        self.assertEqual(codes, [250, 250, 250, 550, 354, 250, 250, 250, 250,
                                 354, 250])
        self.assertEqual(c.reply()[0], 221)
        self.assertTrue(c.closed())
        c.close()
        self.assertDelivered(self.alice_md, m1, "alice@example.org", "a@example.net")
        self.assertDelivered(self.bob_md, m2, "bob@example.org", "b@example.net")

    def test_without_pipelining_helo_null_sender(self):
        self.start()
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.helo("old.example.net")
            s.does_esmtp = False
            s.sendmail("", ["alice@example.org"], CRLF_MSG)
        self.env.wait_event("delivered")
        data = self.assertDelivered(self.alice_md, CRLF_MSG,
                                    "alice@example.org", "")
        self.assertIn(b" with SMTP id ", data)

    def test_smtputf8_and_size(self):
        self.start()
        msg = "Subject: caf\u00e9\r\nTo: alice@example.org\r\n\r\nn\u00e4\u00efve\r\n".encode()
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.ehlo("c.example.net")
            s.sendmail("j\u00f6rg@example.net", ["alice@example.org"], msg,
                       mail_options=["SMTPUTF8", "BODY=8BITMIME",
                                     f"SIZE={len(msg)}"])
            # Declared larger than the limit: refused at MAIL.
            code, text = s.mail("x@example.net", [f"SIZE={60 << 20}"])
            self.assertEqual(code, 552, text)
            s.rset()
        self.env.wait_event("delivered")
        data = self.assertDelivered(self.alice_md, msg, "alice@example.org",
                                    "j\u00f6rg@example.net")
        self.assertIn(b" with UTF8SMTP id ", data)

    def test_bdat_raw(self):
        self.start()
        c = SmtpClient(self.smtp_port)
        self.assertEqual(c.cmd("EHLO c.example.net")[0], 250)
        body = b"Subject: bdat\r\n\r\nbinary \x00\x01\xff and a bare\nLF\r\n.\r\n"
        c.send(b"MAIL FROM:<s@example.net> BODY=BINARYMIME\r\n")
        code, lines = c.reply()
        if code != 250:   # BINARYMIME not offered: plain BDAT
            c.send(b"MAIL FROM:<s@example.net>\r\n")
            self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<alice@example.org>")[0], 250)
        c.send(b"BDAT 10\r\n" + body[:10])
        self.assertEqual(c.reply()[0], 250)
        c.send(b"BDAT %d LAST\r\n" % (len(body) - 10) + body[10:])
        code, lines = c.reply()
        self.assertEqual(code, 250, lines)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        c.close()
        self.env.wait_event("delivered")
        self.assertDelivered(self.alice_md, body, "alice@example.org",
                             "s@example.net")

    def test_relay_unknown_postmaster_aliases(self):
        aliases = self.env.srv / "aliases"
        aliases.write_text("# aliases\n"
                           "postmaster: bob\n"
                           "team@example.org: alice, bob\n"
                           "@example.org: bob\n"
                           "ghost@example.org: nobody-here\n")
        self.start(aliases_file=str(aliases))
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.ehlo("c.example.net")
            s.mail("s@example.net")
            code, text = s.rcpt("someone@elsewhere.example")
            self.assertEqual(code, 550)
            self.assertTrue(text.startswith(b"5.7.1"), text)
            code, text = s.rcpt("ghost@example.org")
            self.assertEqual(code, 550)
            self.assertTrue(text.startswith(b"5.1.1"), text)
            self.assertEqual(s.rcpt("Postmaster")[0], 250)
            self.assertEqual(s.rcpt("team@example.org")[0], 250)
            self.assertEqual(s.rcpt("anything@example.org")[0], 250)
            code, text = s.data(CRLF_MSG)
            self.assertEqual(code, 250, text)
        self.env.wait_event("delivered", count=2)
        # bob is reached three ways but gets one copy (the first RCPT's).
        self.assertDelivered(self.bob_md, CRLF_MSG, "postmaster",
                             "s@example.net")
        a = self.assertDelivered(self.alice_md, CRLF_MSG, "team@example.org",
                                 "s@example.net")
        self.assertTrue(a)
        ev = self.env.events("rcpt_refused")
        self.assertEqual(sorted(e["reason"] for e in ev),
                         ["not_local", "unknown_user"])

    def test_no_local_domains_refuses_all(self):
        self.start(local_domains="")
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.ehlo("c.example.net")
            s.mail("s@example.net")
            code, text = s.rcpt("alice@example.org")
            self.assertEqual(code, 550)
            self.assertTrue(text.startswith(b"5.7.1"))

    def test_alias_hard_link(self):
        aliases = self.env.srv / "aliases"
        aliases.write_text("team@example.org: alice, bob\n")
        self.start(aliases_file=str(aliases))
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.sendmail("s@example.net", ["team@example.org"], CRLF_MSG)
        self.env.wait_event("delivered", count=2)
        a = self.files(self.alice_md)[0]
        b = self.files(self.bob_md)[0]
        self.assertEqual(os.stat(a).st_ino, os.stat(b).st_ino)
        self.assertEqual(os.stat(a).st_nlink, 2)

    def test_quota(self):
        self.env.add_user_line("carol", "carolpw",
                               extra="quota_bytes=2k quota_messages=2")
        self.start()
        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 3
        small = b"Subject: small\r\n\r\nhi\r\n"
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.ehlo("c.example.net")
            # SIZE larger than the whole quota: can never fit.
            s.mail("s@example.net", [f"SIZE={len(big)}"])
            code, text = s.rcpt("carol@example.org")
            self.assertEqual((code, text[:5]), (552, b"5.2.2"))
            s.rset()
            # Without SIZE, the end of data finds it.
            s.mail("s@example.net")
            self.assertEqual(s.rcpt("carol@example.org")[0], 250)
            code, text = s.data(big)
            self.assertEqual((code, text[:5]), (552, b"5.2.2"))
            for _ in range(2):
                s.sendmail("s@example.net", ["carol@example.org"], small)
            # Two messages: full for now.
            s.mail("s@example.net")
            code, text = s.rcpt("carol@example.org")
            self.assertEqual((code, text[:5]), (452, b"4.2.2"))
            s.rset()
        self.assertEqual(len(self.files(self.env.maildir("carol"))), 2)

    def test_quota_bytes_at_data(self):
        self.env.add_user_line("dave", "davepw", extra="quota_bytes=1500")
        self.start()
        msg = b"Subject: m\r\n\r\n" + b"y" * 700 + b"\r\n"
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.sendmail("s@example.net", ["dave@example.org"], msg)
            s.mail("s@example.net")
            self.assertEqual(s.rcpt("dave@example.org")[0], 250)
            code, text = s.data(msg)
            self.assertEqual((code, text[:5]), (452, b"4.2.2"))
        self.assertEqual(len(self.files(self.env.maildir("dave"))), 1)
        # SMTP: one recipient over quota fails the message for all, so the
        # client's retry duplicates nothing.
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.ehlo("c.example.net")
            s.mail("s@example.net")
            self.assertEqual(s.rcpt("alice@example.org")[0], 250)
            self.assertEqual(s.rcpt("dave@example.org")[0], 250)
            code, text = s.data(msg)
            self.assertEqual((code, text[:5]), (452, b"4.2.2"))
        self.assertEqual(self.files(self.alice_md), [])

    def test_smuggling_variants(self):
        self.start()
        variants = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n"]
        for v in variants:
            with self.subTest(v=v):
                c = SmtpClient(self.smtp_port)
                c.cmd("EHLO c.example.net")
                self.assertEqual(c.cmd("MAIL FROM:<s@example.net>")[0], 250)
                self.assertEqual(c.cmd("RCPT TO:<alice@example.org>")[0], 250)
                self.assertEqual(c.cmd("DATA")[0], 354)
                c.send(b"Subject: a\r\n\r\nfirst" + v +
                       b"MAIL FROM:<evil@example.net>\r\n"
                       b"RCPT TO:<bob@example.org>\r\nDATA\r\n"
                       b"Subject: smuggled\r\n\r\nx\r\n.\r\n")
                code, lines = c.reply()
                # One message, ending at the only CRLF.CRLF; a bare CR or
                # LF makes it rejected whole.
                self.assertEqual(code, 550, lines)
                self.assertTrue(lines[0].startswith("550 5.6.0"), lines)
                self.assertEqual(c.cmd("NOOP")[0], 250)
                c.cmd("QUIT")
                c.close()
        self.assertEqual(self.files(self.alice_md), [])
        self.assertEqual(self.files(self.bob_md), [])

    def test_long_lines_and_too_many_errors(self):
        self.start(max_bad_commands=3)
        c = SmtpClient(self.smtp_port)
        c.cmd("EHLO c.example.net")
        code, lines = c.cmd("NOOP " + "x" * 600)
        self.assertEqual(code, 500)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.net>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<alice@example.org>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: long\r\n\r\n" + b"z" * 1200 + b"\r\n.\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 500, lines)
        self.assertTrue(lines[0].startswith("500 5.5.2"))
        self.assertEqual(self.files(self.alice_md), [])
        c.cmd("BOGUS")
        code, lines = c.cmd("BOGUS")
        self.assertEqual(code, 500)
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(c.closed())
        c.close()
        self.env.wait_event("smtp_logout", reason="errors")

    def test_swaks(self):
        swaks = shutil.which("swaks")
        if swaks is None:
            self.skipTest("swaks not installed (scripts/deps)")
        self.start()
        body = "Subject: from swaks\n\nswaks body \u00e9\n"
        for pipe in ("--pipeline", "--no-pipeline" if False else None):
            args = [swaks, "--server", "127.0.0.1", "--port",
                    str(self.smtp_port), "--from", "s@example.net", "--to",
                    "alice@example.org", "--helo", "swaks.example.net",
                    "--data", "-", "--silent", "2"]
            if pipe:
                args.append(pipe)
            r = subprocess.run(args, input=body.encode(), capture_output=True,
                               timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.env.wait_event("delivered", count=2)
        files = self.files(self.alice_md)
        self.assertEqual(len(files), 2)
        for f in files:
            _, rest = self.header_block(f.read_bytes())
            # swaks ends the data with one more CRLF of its own.
            self.assertEqual(rest.rstrip(b"\r\n"),
                             crlfify(body.encode()).rstrip(b"\r\n"))

    def test_delivery_during_pop3_session(self):
        self.start()
        self.env.deliver("alice", b"Subject: old\n\nold\n")
        p = poplib.POP3("127.0.0.1", self.env.port, timeout=TIMEOUT)
        p.user("alice")
        p.pass_("alicepw")
        self.assertEqual(p.stat()[0], 1)
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.sendmail("s@example.net", ["alice@example.org"], CRLF_MSG)
        self.env.wait_event("delivered")
        self.assertEqual(p.stat()[0], 1)    # invisible to the open session
        p.dele(1)
        p.quit()
        got = self.pop_all("alice", "alicepw")
        self.assertEqual(len(got), 1)
        self.assertTrue(got[0].endswith(CRLF_MSG))

    def test_large_message_spills(self):
        self.start()
        body = b"Subject: big\r\n\r\n" + b"".join(
            b"%07d " % i + bytes(range(0x20, 0x7f)) + b"\r\n"
            for i in range(40000))
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=60) as s:
            s.sendmail("s@example.net", ["alice@example.org", "bob@example.org"],
                       body)
        self.env.wait_event("delivered", count=2)
        self.assertDelivered(self.alice_md, body, "alice@example.org",
                             "s@example.net")
        self.assertDelivered(self.bob_md, body, "bob@example.org",
                             "s@example.net")
        self.assertEqual(self.files(self.alice_md, "tmp"), [])

    def test_max_rcpts_and_sessions_per_ip(self):
        self.start(max_rcpts=2, max_sessions_per_ip=2)
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.ehlo("c.example.net")
            s.mail("s@example.net")
            self.assertEqual(s.rcpt("alice@example.org")[0], 250)
            self.assertEqual(s.rcpt("bob@example.org")[0], 250)
            code, text = s.rcpt("alice@example.org")
            self.assertEqual((code, text[:5]), (452, b"4.5.3"))
            # A second connection is fine, a third from the address is not.
            c2 = SmtpClient(self.smtp_port)
            self.assertEqual(c2.greeting[0], 220)
            c3 = socket.create_connection(("127.0.0.1", self.smtp_port), TIMEOUT)
            line = c3.makefile("rb").readline()
            self.assertTrue(line.startswith(b"421 4.7.0 "), line)
            c3.close()
            c2.close()
            self.assertEqual(s.data(CRLF_MSG)[0], 250)
        self.env.wait_event("refused", reason="max_sessions_per_ip")

    def test_rate_limit_per_address(self):
        ip = non_loopback_ipv4()
        if ip is None:
            self.skipTest("no non-loopback IPv4 address")
        port = free_port()
        self.start(smtp_rate_limit=2, extra=[f"smtp_listen = {ip}:{port}"])
        self.env.wait_event("listening", addr=f"{ip}:{port}", proto="smtp")
        codes = []
        with smtplib.SMTP(ip, port, timeout=TIMEOUT) as s:
            s.ehlo("c.example.net")
            for i in range(3):
                s.mail("s@example.net")
                s.rcpt("alice@example.org")
                try:
                    codes.append(s.data(CRLF_MSG)[0])
                except smtplib.SMTPDataError as e:
                    codes.append(e.smtp_code)
                    s.rset()
        self.assertEqual(codes, [250, 250, 451])
        self.env.wait_event("rate_limited", ip=ip)
        # Loopback is exempt.
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            for i in range(3):
                s.sendmail("s@example.net", ["alice@example.org"], CRLF_MSG)
        self.assertEqual(len(self.files(self.alice_md)), 5)

    def test_new_user_without_maildir_big_message(self):
        self.env.add_user_line("erin", "erinpw", create=False)
        self.start()
        body = b"Subject: big\r\n\r\n" + (b"e" * 998 + b"\r\n") * 400
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.sendmail("s@example.net", ["erin@example.org"], body)
        self.assertDelivered(self.env.maildir("erin"), body, "erin@example.org",
                             "s@example.net")

    def test_postmaster_without_alias_is_a_warning(self):
        # RFC 5321 4.5.1: postmaster@ each local domain must be taken.
        # poboxd -t and the log say when it reaches nobody; an alias
        # silences the warning and receives the mail.
        conf = self.env.write_config(local_domains="example.org")
        r = subprocess.run([str(POBOXD), "-t", "-c", str(conf)],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("no alias for postmaster@example.org", r.stderr)
        aliases = self.env.srv / "aliases"
        aliases.write_text("postmaster: bob\n")
        self.start(aliases_file=str(aliases))
        self.assertEqual(self.env.events("config_warning"), [])
        body = b"Subject: pm\r\n\r\nhello postmaster\r\n"
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.sendmail("s@example.net", ["postmaster@example.org"], body)
        self.assertEqual(len(self.files(self.bob_md)), 1)

    def test_aliases_errors_and_reload(self):
        aliases = self.env.srv / "aliases"
        aliases.write_text("a@example.org: alice\nbroken line\n")
        self.env.settings.update(aliases_file=str(aliases))
        conf = self.env.write_config()
        r = subprocess.run([str(POBOXD), "-t", "-c", str(conf)],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{aliases}:2: expected", r.stderr)
        if IS_ROOT:
            # Readable by root only: SIGHUP (as user) could not re-read it.
            private = self.env.dir / "aliases-root"
            private.write_text("a@example.org: alice\n")
            os.chmod(private, 0o600)
            self.env.settings.update(aliases_file=str(private))
            conf = self.env.write_config()
            r = subprocess.run([str(POBOXD), "-t", "-c", str(conf)],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 1)
            self.assertIn("cannot read aliases_file", r.stderr)
        aliases.write_text("a@example.org: alice\n")
        d = self.start(aliases_file=str(aliases))
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.ehlo("c.example.net")
            s.mail("s@example.net")
            self.assertEqual(s.rcpt("a@example.org")[0], 250)
            self.assertEqual(s.rcpt("b@example.org")[0], 550)
        aliases.write_text("a@example.org: alice\nb@example.org: bob\n")
        d.signal(signal.SIGHUP)
        self.env.wait_event("reloaded")
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.sendmail("s@example.net", ["b@example.org"], CRLF_MSG)
        self.assertDelivered(self.bob_md, CRLF_MSG, "b@example.org",
                             "s@example.net")

    def test_ipv6_received(self):
        from harness import ipv6_loopback_ok
        if not ipv6_loopback_ok():
            self.skipTest("no IPv6 loopback")
        port = free_port(socket.AF_INET6)
        self.start(extra=[f"smtp_listen = [::1]:{port}"])
        with smtplib.SMTP("::1", port, timeout=TIMEOUT) as s:
            s.sendmail("s@example.net", ["alice@example.org"], CRLF_MSG)
        data = self.assertDelivered(self.alice_md, CRLF_MSG,
                                    "alice@example.org", "s@example.net")
        self.assertIn(b"([IPv6:::1])", data)

    def test_mail_loop_refused(self):
        """RFC 5321 §6.3: more than 100 Received fields is a loop."""
        self.start()
        hop = b"Received: from a by b; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.sendmail("s@example.net", ["alice@example.org"], hop * 100 + CRLF_MSG)
            s.mail("s@example.net")
            s.rcpt("alice@example.org")
            code, text = s.data(hop * 101 + CRLF_MSG)
            self.assertEqual((code, text[:5]), (554, b"5.3.0"))
        self.assertEqual(len(self.files(self.alice_md)), 1)
        self.env.wait_event("delivery_failed", result="permfail")

    def test_idle_timeout_421(self):
        self.start(smtp_timeout=10)
        c = SmtpClient(self.smtp_port, timeout=30)
        c.cmd("EHLO c.example.net")
        code, lines = c.reply()     # nothing sent: the server gives up
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("421 4.4.2 mx.example.org "))
        self.assertTrue(c.closed())
        c.close()
        self.env.wait_event("smtp_logout", reason="timeout")

    def test_slow_drip_command_times_out(self):
        # A command dripped one octet at a time, each well within the
        # timeout, must not keep the session alive forever: the timer
        # restarts on progress (a whole command, message octets), not
        # on every octet.
        self.start(smtp_timeout=10)
        c = SmtpClient(self.smtp_port, timeout=30)
        self.assertEqual(c.cmd("EHLO c.example.net")[0], 250)
        got = drip(c, [bytes([ch]) for ch in b"NOOP xxxxxxxx"])
        self.assertIsNotNone(got, "still open after 36 s of dripping")
        self.assertEqual(got[0], 421, got)
        self.assertTrue(got[1][0].startswith("421 4.4.2 "), got)
        c.close()
        self.env.wait_event("smtp_logout", reason="timeout")

    def test_slow_drip_data_times_out(self):
        # Message octets dripped a line at a time, each well within the
        # timeout: each read earns only octets / smtp_min_data_rate (500
        # octets/s: 6 ms for 3 octets), so the DATA request ends about
        # smtp_timeout after it began, with a 421, and nothing is kept.
        self.start(smtp_timeout=10)
        c = SmtpClient(self.smtp_port, timeout=30)
        self.assertEqual(c.cmd("EHLO c.example.net")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.net>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<alice@example.org>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        got = drip(c, [b"x\r\n"] * 10)
        self.assertIsNotNone(got, "still open after 30 s of dripping message data")
        self.assertEqual(got[0], 421, got)
        c.close()
        self.env.wait_event("smtp_logout", reason="timeout")
        self.assertEqual(self.files(self.alice_md), [])

    def test_sigterm_says_421(self):
        d = self.start()
        c = SmtpClient(self.smtp_port)
        c.cmd("EHLO c.example.net")
        self.assertEqual(c.cmd("MAIL FROM:<s@example.net>")[0], 250)
        self.assertEqual(d.stop(), 0)
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("421 4.3.2 mx.example.org "))
        self.assertTrue(c.closed())
        c.close()

    def test_concurrent_senders_two_workers(self):
        """16 clients at once over SMTP and LMTP, two workers: every
        message acknowledged is stored once, byte for byte."""
        import threading
        self.start(workers=2)
        sent, errors = {}, []

        def client(k):
            try:
                cls = smtplib.LMTP if k % 2 else smtplib.SMTP
                port = self.lmtp_port if k % 2 else self.smtp_port
                with cls("127.0.0.1", port, timeout=TIMEOUT * 3) as s:
                    for i in range(8):
                        tag = f"c{k}m{i}"
                        body = f"Subject: {tag}\r\n\r\n".encode() + b"".join(
                            os.urandom(38).hex().encode() + b"\r\n"
                            for _ in range(80))
                        s.sendmail("s@example.net", ["alice@example.org"], body)
                        sent[tag] = body
            except Exception as e:     # reported below, in the main thread
                errors.append(repr(e))

        ts = [threading.Thread(target=client, args=(k,)) for k in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertEqual(errors, [])
        got = {}
        for p in self.files(self.alice_md):
            _, rest = self.header_block(p.read_bytes())
            tag = re.search(rb"Subject: (\S+)", rest).group(1).decode()
            self.assertNotIn(tag, got)
            got[tag] = rest
        self.assertEqual(got, sent)

    def test_stale_tmp_removed(self):
        stale = Path(self.alice_md) / "tmp" / "1.stale.host"
        fresh = Path(self.alice_md) / "tmp" / "2.fresh.host"
        stale.write_bytes(b"partial")
        fresh.write_bytes(b"partial")
        old = time.time() - 37 * 3600
        os.utime(stale, (old, old))
        chown_tree(self.env.srv)
        self.start()
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.sendmail("s@example.net", ["alice@example.org"], CRLF_MSG)
        self.env.wait_event("delivered")
        self.assertFalse(stale.exists())
        self.assertTrue(fresh.exists())


class LmtpTest(SmtpBase):

    def test_lmtp_tcp_per_recipient(self):
        self.env.add_user_line("carol", "carolpw", extra="quota_messages=1")
        self.env.deliver("carol", b"Subject: x\n\nx\n")
        self.start()
        lm = smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=TIMEOUT)
        try:
            code, _ = lm.ehlo("mta.example.net")
            self.assertEqual(code, 250)
            lm.mail("s@example.net")
            self.assertEqual(lm.rcpt("alice@example.org")[0], 250)
            self.assertEqual(lm.rcpt("bob@example.org")[0], 250)
            self.assertEqual(lm.rcpt("nobody@example.org")[0], 550)
            # One reply per accepted recipient after DATA.
            lm.putcmd("data")
            self.assertEqual(lm.getreply()[0], 354)
            lm.send(CRLF_MSG.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            r1 = lm.getreply()
            r2 = lm.getreply()
            self.assertEqual(r1[0], 250, r1)
            self.assertEqual(r2[0], 250, r2)
            self.assertIn(b"<alice@example.org>", r1[1])
            self.assertIn(b"<bob@example.org>", r2[1])
        finally:
            lm.quit()
        self.env.wait_event("delivered", count=2)
        data = self.assertDelivered(self.alice_md, CRLF_MSG,
                                    "alice@example.org", "s@example.net")
        self.assertIn(b" with LMTP id ", data)

    def test_lmtp_unix_socket(self):
        sock = self.env.srv / "lmtp.sock"
        self.start(lmtp=False, extra=[f"lmtp_listen = {sock}"])
        self.env.wait_event("listening", addr=str(sock), proto="lmtp")
        st = os.stat(sock)
        self.assertEqual(st.st_mode & 0o777, 0o660)
        if IS_ROOT:
            import pwd
            self.assertEqual(st.st_uid, pwd.getpwnam("nobody").pw_uid)
        lm = smtplib.LMTP(str(sock), timeout=TIMEOUT)
        try:
            self.assertEqual(lm.sendmail("s@example.net", ["alice@example.org"],
                                         CRLF_MSG), {})
        finally:
            lm.quit()
        self.env.wait_event("delivered")
        data = self.assertDelivered(self.alice_md, CRLF_MSG,
                                    "alice@example.org", "s@example.net")
        self.assertIn(b"(local socket)", data)
        # Quota per recipient in LMTP: carol full, alice fine.

    def test_lmtp_socket_swapped_for_symlink(self):
        # Between bind and chown/chmod, the socket's directory owner swaps
        # the socket for a symlink: neither may follow it (root would
        # hand the target to the serving user).
        if not IS_ROOT:
            self.skipTest("needs root")
        if b"libasan" in subprocess.run(["ldd", str(POBOXD)],
                                        capture_output=True).stdout:
            self.skipTest("LD_PRELOAD shim and ASan do not mix")
        shim = self.env.dir / "bindswap.so"
        src = Path(__file__).resolve().parent / "faults" / "bindswap.c"
        r = subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(shim),
                            str(src), "-ldl"], capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest(f"cannot build the shim: {r.stderr}")
        target = self.env.dir / "precious"
        target.write_text("root's\n")
        os.chmod(target, 0o600)
        sock = self.env.srv / "lmtp.sock"
        keys = ("LD_PRELOAD", "BINDSWAP_PATH", "BINDSWAP_TARGET")
        saved = {k: os.environ.get(k) for k in keys}
        os.environ.update({"LD_PRELOAD": str(shim), "BINDSWAP_PATH": str(sock),
                           "BINDSWAP_TARGET": str(target)})
        try:
            self.start(lmtp=False, extra=[f"lmtp_listen = {sock}"])
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.assertTrue(os.path.islink(sock))
        st = os.stat(target)
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (0, 0o600))

    def test_lmtp_mixed_results(self):
        self.env.add_user_line("carol", "carolpw", extra="quota_bytes=100")
        self.start()
        c = SmtpClient(self.lmtp_port)
        self.assertEqual(c.cmd("LHLO mta.example.net")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.net>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<alice@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<carol@example.org>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: q\r\n\r\n" + b"q" * 200 + b"\r\n.\r\n")
        r1, r2 = c.reply(), c.reply()
        self.assertEqual(r1[0], 250, r1)
        self.assertEqual(r2[0], 552, r2)
        self.assertIn("5.2.2", r2[1][0])
        # BDAT LAST in LMTP: one reply per recipient too (RFC 3030 §4.2).
        body = b"Subject: b\r\n\r\nchunked\r\n"
        self.assertEqual(c.cmd("MAIL FROM:<s@example.net>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<alice@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<bob@example.org>")[0], 250)
        c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        r1, r2 = c.reply(), c.reply()
        self.assertEqual((r1[0], r2[0]), (250, 250), (r1, r2))
        self.assertIn("<bob@example.org>", r2[1][0])
        c.cmd("QUIT")
        c.close()
        self.assertEqual(len(self.files(self.alice_md)), 2)
        self.assertDelivered(self.bob_md, body, "bob@example.org", "s@example.net")
        self.assertEqual(self.files(self.env.maildir("carol")), [])


    def test_lmtp_user_reached_twice_not_lost(self):
        # alice is reached by the alias and by her own address; the alias
        # fails on carol's quota, so alice's own RCPT must not say 250
        # unless she has the message.
        self.env.add_user_line("carol", "carolpw", extra="quota_bytes=100")
        aliases = self.env.srv / "aliases"
        aliases.write_text("team@example.org: carol, alice\n")
        self.start(aliases_file=str(aliases))
        c = SmtpClient(self.lmtp_port)
        self.assertEqual(c.cmd("LHLO mta.example.net")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.net>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<team@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<alice@example.org>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        body = b"Subject: q\r\n\r\n" + b"q" * 200 + b"\r\n"
        c.send(body + b".\r\n")
        r1, r2 = c.reply(), c.reply()
        c.cmd("QUIT")
        c.close()
        self.assertEqual(r1[0], 552, r1)
        self.assertEqual(r2[0], 250, r2)
        self.assertDelivered(self.alice_md, body, "alice@example.org",
                             "s@example.net")
        self.assertEqual(self.files(self.env.maildir("carol")), [])


def make_pki(d):
    from test_tls import make_pki as mk
    return mk(d)


class SmtpTlsTest(SmtpBase):

    def test_starttls_verified_and_injection(self):
        ca, cert, key = make_pki(self.env.srv / "tls")
        self.start(tls_cert=str(cert), tls_key=str(key))
        ctx = ssl.create_default_context(cafile=str(ca))
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as s:
            s.ehlo("c.example.net")
            self.assertTrue(s.has_extn("starttls"))
            s.starttls(context=ctx, )
            s.ehlo("c.example.net")
            self.assertFalse(s.has_extn("starttls"))
            s.sendmail("s@example.net", ["alice@example.org"], CRLF_MSG)
        self.env.wait_event("delivered")
        data = self.assertDelivered(self.alice_md, CRLF_MSG,
                                    "alice@example.org", "s@example.net")
        self.assertIn(b" with ESMTPS", data)
        self.env.wait_event("tls")
        # Injection: commands pipelined behind STARTTLS are dropped.
        c = SmtpClient(self.smtp_port)
        c.cmd("EHLO c.example.net")
        c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.net>\r\n")
        code, _ = c.reply()
        self.assertEqual(code, 220)
        tls = ctx.wrap_socket(c.sock, server_hostname="localhost")
        f = tls.makefile("rb")
        tls.sendall(b"EHLO c.example.net\r\n")
        line = f.readline()
        while line[3:4] == b"-":
            line = f.readline()
        self.assertTrue(line.startswith(b"250 "), line)
        tls.sendall(b"RCPT TO:<alice@example.org>\r\n")
        self.assertTrue(f.readline().startswith(b"503"))   # no MAIL survived
        tls.sendall(b"QUIT\r\n")
        f.readline()
        tls.close()
