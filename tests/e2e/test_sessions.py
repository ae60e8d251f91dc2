"""test_sessions.py: session life cycle edges: a client that pipelines and
half-closes gets every reply; after a login answered at once (APOP, or a
cached password) the idle timer, not the login deadline, applies; TOP is
not a retrieval for EXPIRE 0; failure timing is calibrated per scheme."""

import socket
import time

from harness import PoboxTestCase, apop_digest, simple_message, wire_retr

PW = "sessions-pw"


def send_and_half_close(port, data):
    """Sends data, shuts down the sending side, returns all that comes back."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


class SessionTest(PoboxTestCase):

    def test_half_close_gets_every_reply(self):
        self.env.add_user("alice", PW)
        big = b"Subject: big\n\n" + b"line of text .\n.dot\n" * 150000
        self.env.deliver("alice", big)
        self.env.deliver("alice", simple_message("second"))
        self.env.start()
        data = send_and_half_close(
            self.env.port,
            f"USER alice\r\nPASS {PW}\r\nRETR 1\r\nDELE 2\r\nQUIT\r\n".encode())
        expect_retr = wire_retr(big)
        self.assertIn(expect_retr, data)
        self.assertTrue(data.endswith(b"+OK Message 2 deleted\r\n"
                                      b"+OK Logging out (1 message left)\r\n"),
                        data[-200:])
        # The QUIT that arrived was honoured: UPDATE ran, message 2 is gone.
        self.assertEqual(len(self.env.messages("alice")), 1)
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["reason"], "quit")
        self.assertEqual(ev["dele"], "1")

    def test_half_close_without_quit_deletes_nothing(self):
        self.env.add_user("alice", PW)
        self.env.deliver("alice", simple_message("one"))
        self.env.start()
        data = send_and_half_close(self.env.port,
                                   f"USER alice\r\nPASS {PW}\r\nDELE 1\r\n".encode())
        self.assertTrue(data.endswith(b"+OK Message 1 deleted\r\n"), data)
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["reason"], "eof")
        self.assertEqual(ev["update"], "none")
        self.assertEqual(len(self.env.messages("alice")), 1)

    def test_idle_timer_after_immediate_login(self):
        # login_timeout is a deadline from connect; once logged in, the
        # (at least 10 minute) idle timer must apply, also when the login
        # was answered without leaving the event loop (APOP, auth cache).
        self.env.add_user_line("mrose", "x", extra="apop=tanstaafl")
        self.env.start(apop="yes", login_timeout="10")
        with self.env.connect() as c:
            digest = apop_digest(c.greeting, "tanstaafl")
            c.ok(f"APOP mrose {digest}")
            time.sleep(11)
            c.ok("NOOP")
            c.ok("QUIT")
        self.assertEqual(self.env.events("logout", reason="timeout"), [])

    def test_top_is_not_retrieval_for_expire_zero(self):
        self.env.add_user("alice", PW)
        self.env.deliver("alice", simple_message("previewed"))
        self.env.deliver("alice", simple_message("downloaded"))
        self.env.start(expire="0")
        with self.env.connect() as c:
            c.login("alice", PW)
            self.assertTrue(c.ok("TOP 1 0").startswith("+OK"))
            c.multi_raw()
            c.ok("RETR 2")
            c.multi_raw()
            self.assertEqual(c.ok("QUIT"), "+OK Logging out (1 message left)")
        left = list(self.env.messages("alice").values())
        self.assertEqual(len(left), 1)
        self.assertIn(b"previewed", left[0])

    def test_failure_floor_calibrated(self):
        # One verification per scheme in the file sets the pace of every
        # failed login (the timing itself is not asserted here).
        self.env.add_user("alice", PW)               # yescrypt
        self.env.add_user_line("bob", "bob-pw")      # SHA512-CRYPT
        self.env.start()
        ev = self.env.wait_event("auth_calibrated")
        self.assertEqual(ev["schemes"], "2")
        self.assertGreater(int(ev["failure_floor_ms"]), 0)
