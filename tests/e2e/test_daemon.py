"""test_daemon.py: poboxd as a program: configuration check and printing,
privilege drop, signals, listeners, the log, and the pobox admin tool."""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
import unittest

from harness import (IS_ROOT, POBOX, POBOXD, REPO, UNPRIV_USER, Client, PoboxTestCase,
                     crlf, free_port, ipv6_loopback_ok, non_loopback_ipv4,
                     simple_message, uidl_digest, uidl_of)

PW = "daemon-pw"


def poboxd(*args):
    return subprocess.run([str(POBOXD), *args], capture_output=True, text=True,
                          timeout=30)


class ConfigTest(PoboxTestCase):

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed")
    def test_systemd_units(self):
        # The shipped units (etc/*.service, etc/*.timer) parse: systemd
        # ignores an unknown or malformed directive with a warning only,
        # so a unit can silently lose a hardening line. Checked offline
        # with the programs' paths pointed at this build.
        units = sorted(p for p in (REPO / "etc").iterdir()
                       if p.suffix in (".service", ".timer"))
        self.assertEqual([p.name for p in units],
                         ["pobox-fetch.service", "pobox-fetch.timer", "poboxd.service"])
        d = self.env.dir / "units"
        d.mkdir()
        for u in units:
            (d / u.name).write_text(u.read_text()
                                    .replace("/usr/local/sbin/poboxd", str(POBOXD))
                                    .replace("/usr/local/bin/pobox", str(POBOX)))
        # pobox-fetch's units are user units: verified by a user manager,
        # and every unit they order after or pull in must exist for one
        # (a missing one is ignored in silence: a user manager has no
        # network-online.target, so such a line only looks like a wait).
        user = [u for u in units if u.name.startswith("pobox-fetch.")]
        rt = self.env.dir / "runtime"
        rt.mkdir(mode=0o700)
        for scope, group in ((["--system"], [u for u in units if u not in user]),
                             (["--user"], user)):
            r = subprocess.run(["systemd-analyze", *scope, "verify", "--man=no",
                                *(str(d / u.name) for u in group)],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "XDG_RUNTIME_DIR": str(rt)})
            self.assertEqual((r.stdout + r.stderr).strip(), "", r.stdout + r.stderr)
        known = {u.name for u in units} | set(os.listdir("/usr/lib/systemd/user"))
        for u in user:
            for m in re.finditer(r"^(?:After|Before|Wants|Requires|BindsTo)=(.*)$",
                                 u.read_text(), re.M):
                for dep in m.group(1).split():
                    self.assertTrue(dep in known, f"{u.name}: {m.group(0)}: no user unit")
        # And it would say so.
        (d / "poboxd.service").write_text((d / "poboxd.service").read_text()
                                          .replace("ProtectSystem=strict",
                                                   "ProtectSystem=strickt"))
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(d / "poboxd.service")],
                           capture_output=True, text=True, timeout=60)
        self.assertIn("strickt", r.stdout + r.stderr)

    def test_check_good(self):
        self.env.add_user("alice", PW)
        self.env.write_config()
        r = poboxd("-c", str(self.env.conf), "-t")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_check_as_serving_user(self):
        # As root, -t checks what the serving user must reach.
        if not IS_ROOT:
            self.skipTest("needs root to switch users")
        self.env.add_user("alice", PW)
        self.env.write_config()
        os.chown(self.env.passwd, 0, 0)
        os.chmod(self.env.passwd, 0o600)
        r = poboxd("-c", str(self.env.conf), "-t")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"cannot read passwd_file {self.env.passwd}", r.stderr)
        self.env.fix_owner()
        r = poboxd("-c", str(self.env.conf), "-t")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_check_bad_reports_file_and_line(self):
        self.env.add_user("alice", PW)
        cases = [
            ("no_such_setting = 1", "unknown setting"),
            ("idle_timeout = 100", "below RFC 1939 minimum of 600"),
            ("login_timeout = 5", "below 10"),
            ("login_timeout = 601", "above 600"),
            ("cleartext_auth = sometimes", "bad enum"),
            ("apop = maybe", "bad bool"),
            ("max_sessions = -1", "negative"),
            ("max_sessions = 10x", "trailing junk"),
            ("max_bad_commands = 4294967296", "overflow"),
            ("expire = soon", "bad expire"),
            ("login_delay = abc", "bad delay"),
            ("log_level = loud", "bad level"),
            ("just some words", "no '='"),
            ("listen = nowhere", "listen without a port"),
        ]
        for line, why in cases:
            with self.subTest(line=line):
                self.env.extra_lines = ["", "# a comment", line, "# after"]
                self.env.write_config()
                lineno = self.env.config_text().splitlines().index(line) + 1
                r = poboxd("-c", str(self.env.conf), "-t")
                out = r.stdout + r.stderr
                self.assertEqual(r.returncode, 1, f"{why}: {out}")
                self.assertIn(f"{self.env.conf}:{lineno}:", out, why)

    def test_check_missing_file_and_passwd(self):
        r = poboxd("-c", str(self.env.dir / "nope.conf"), "-t")
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope.conf", r.stdout + r.stderr)
        self.env.write_config()   # passwd file does not exist
        if self.env.passwd.exists():
            self.env.passwd.unlink()
        r = poboxd("-c", str(self.env.conf), "-t")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn(str(self.env.passwd), r.stdout + r.stderr)

    def test_print_round_trip(self):
        self.env.add_user("alice", PW)
        self.env.listen.append(f"127.0.0.1:{free_port()}")
        self.env.write_config(login_timeout=33, max_sessions=77, apop="yes",
                              cleartext_auth="always", expire=30,
                              implementation="round trip")
        r1 = poboxd("-c", str(self.env.conf), "-n")
        self.assertEqual(r1.returncode, 0, r1.stderr)
        for want in [r"^login_timeout\s*=\s*33", r"^max_sessions\s*=\s*77",
                     r"^apop\s*=\s*(yes|true|on|1)", r"^cleartext_auth\s*=\s*always",
                     r"^expire\s*=\s*\"?30", r"^implementation\s*=\s*\"?round trip\"?\s*$",
                     rf"^listen\s*=\s*\"?{re.escape(self.env.listen[0])}",
                     rf"^listen\s*=\s*\"?{re.escape(self.env.listen[1])}",
                     rf"^passwd_file\s*=\s*\"?{re.escape(str(self.env.passwd))}"]:
            self.assertRegex(r1.stdout, re.compile(want, re.M))
        conf2 = self.env.srv / "printed.conf"
        conf2.write_text(r1.stdout)
        self.env.fix_owner()
        r2 = poboxd("-c", str(conf2), "-n")
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertEqual(r2.stdout, r1.stdout)
        r3 = poboxd("-c", str(conf2), "-t")
        self.assertEqual(r3.returncode, 0, r3.stdout + r3.stderr)


class DaemonTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        self.env.add_user("alice", PW)
        self.msgs = [simple_message("d1"), simple_message("d2", "two\n.dot\n"),
                     simple_message("d3")]
        self.uidls = [uidl_of(self.env.deliver("alice", m).name) for m in self.msgs]

    def test_listening_and_started_log(self):
        self.env.listen.append(f"127.0.0.1:{free_port()}")
        d = self.env.start()
        for a in self.env.listen:
            self.env.wait_event("listening", addr=a)
        for a in self.env.listen:
            c = Client(int(a.rsplit(":", 1)[1]))
            c.login("alice", PW)
            c.cmd("QUIT")
            c.close()
        self.env.wait_event("logout", user="alice", count=2)
        self.assertEqual(d.stop(), 0)

    def test_logout_log_fields(self):
        self.env.start()
        c = self.env.connect()
        local_port = c.sock.getsockname()[1]
        c.login("alice", PW)
        c.cmd("STAT")
        c.cmd("RETR 1")
        c.multi_raw()
        c.cmd("RETR 2")
        c.multi_raw()
        c.cmd("DELE 1")
        c.cmd("BOGUS")
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        ev = self.env.wait_event("logout", user="alice")
        conn = self.env.wait_event("connect", session=ev["session"])
        self.assertEqual(conn["ip"], "127.0.0.1")
        self.assertEqual(conn["port"], str(local_port))
        login = self.env.wait_event("login", session=ev["session"])
        self.assertEqual((login["user"], login["method"]), ("alice", "pass"))
        s1, s2 = len(crlf(self.msgs[0])), len(crlf(self.msgs[1]))
        want = {"reason": "quit", "commands": "8", "retr": "2",
                "retr_bytes": str(s1 + s2), "dele": "1", "dele_bytes": str(s1),
                "uidl_digest": uidl_digest(self.uidls)}
        self.assertEqual({k: ev.get(k) for k in want}, want, ev["_line"])
        self.assertRegex(ev["_line"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z poboxd "
                         r"level=info session=\S+ event=logout")
        self.assertRegex(ev["session"], r"^[A-Za-z0-9]{6,}$")
        self.assertNotIn(PW, self.env.log_text())

    @unittest.skipUnless(IS_ROOT, "privilege drop needs root")
    def test_privilege_drop(self):
        d = self.env.start()
        c = self.env.connect()
        c.login("alice", PW)
        c.cmd("RETR 1")
        c.multi_raw()
        # The mail process (the master stays root to start the roles;
        # test_privsep checks each role).
        pid = d.worker_pids(role="mail")[0]
        st = d.proc_status(pid)
        nob = pwd.getpwnam(UNPRIV_USER)
        uids = [int(x) for x in st["Uid"].split()]
        gids = [int(x) for x in st["Gid"].split()]
        self.assertEqual(uids, [nob.pw_uid] * 4, st["Uid"])
        self.assertEqual(gids, [nob.pw_gid] * 4, st["Gid"])
        self.assertNotIn(0, [int(x) for x in st.get("Groups", "").split()])
        # Every thread (the auth workers too) dropped.
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/status") as f:
                txt = f.read()
            self.assertNotRegex(txt, r"(?m)^Uid:\s+0\b")
            self.assertNotRegex(txt, r"(?m)^Gid:\s+0\b")
        c.cmd("DELE 1")
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        self.env.wait_event("logout", user="alice")
        self.assertNotIn(self.uidls[0], self.env.messages("alice"))

    @unittest.skipUnless(IS_ROOT, "needs root")
    def test_refuses_root_user(self):
        self.env.write_config()
        self.env.conf.write_text(self.env.config_text().replace(
            f"user = {UNPRIV_USER}", "user = root"))
        d = self.env.start(wait=False, write=False)
        rc = d.proc.wait(10)
        self.assertNotEqual(rc, 0, "poboxd serves as root")

    def test_sigterm(self):
        d = self.env.start()
        c = self.env.connect()
        c.login("alice", PW)
        c.cmd("DELE 1")
        c.cmd("DELE 2")
        idle = self.env.connect()
        # stop() fails the test if poboxd does not exit soon after SIGTERM.
        self.assertEqual(d.stop(), 0, "exit status after SIGTERM")
        self.assertTrue(c.is_closed(5))
        self.assertTrue(idle.is_closed(5))
        ev = self.env.wait_event("logout", user="alice")
        self.assertEqual(ev["reason"], "shutdown")
        self.assertEqual(ev["dele"], "0")
        self.assertEqual(sorted(self.env.messages("alice")), sorted(self.uidls))
        self.env.wait_event("shutdown")
        with self.assertRaises(OSError):
            Client(self.env.port, timeout=2)

    def test_sighup_reload_keeps_sessions(self):
        d = self.env.start(implementation="before-reload")
        old = self.env.connect()
        old.login("alice", PW)
        old.cmd("DELE 3")
        pending = self.env.connect()   # connected, not logged in
        self.env.add_user("bob", "bob-pw")
        self.env.write_config(implementation="after-reload")
        d.signal(signal.SIGHUP)
        self.env.wait_event("reloaded")
        self.assertTrue(d.alive())
        # Old sessions go on under the settings they started with.
        self.assertTrue(old.cmd("STAT").startswith("+OK 2 "))
        old.send("CAPA\r\n")
        old.line()
        self.assertIn("IMPLEMENTATION before-reload", old.multi())
        pending.login("bob", "bob-pw")
        new = self.env.connect()
        new.send("CAPA\r\n")
        new.line()
        self.assertIn("IMPLEMENTATION after-reload", new.multi())
        self.assertTrue(old.cmd("QUIT").startswith("+OK"))
        self.env.wait_event("logout", user="alice")
        self.assertNotIn(self.uidls[2], self.env.messages("alice"))
        # A broken config on SIGHUP keeps the running one.
        self.env.conf.write_text(self.env.config_text() + "bogus line\n")
        d.signal(signal.SIGHUP)
        self.env.wait_event("reload_failed")
        self.assertTrue(d.alive())
        c = self.env.connect()
        c.send("CAPA\r\n")
        c.line()
        self.assertIn("IMPLEMENTATION after-reload", c.multi())
        c.login("alice", PW)

    @unittest.skipUnless(ipv6_loopback_ok(), "no IPv6 loopback here")
    def test_ipv6_listener(self):
        p6 = free_port(socket.AF_INET6)
        self.env.listen.append(f"[::1]:{p6}")
        self.env.start()
        self.env.wait_event("listening", addr=f"[::1]:{p6}")
        c = Client(p6, host="::1")
        self.assertTrue(c.greeting.startswith("+OK"))
        c.send("CAPA\r\n")
        c.line()
        self.assertIn("USER", c.multi(), "::1 is loopback for cleartext_auth")
        c.login("alice", PW)
        self.assertEqual(c.cmd("UIDL 1"), f"+OK 1 {self.uidls[0]}")
        c.cmd("QUIT")
        ev = self.env.wait_event("logout", user="alice")
        conn = self.env.wait_event("connect", session=ev["session"])
        self.assertEqual(conn["ip"], "::1")
        # The IPv4 listener still works.
        c4 = self.env.connect()
        c4.login("alice", PW)

    def test_cleartext_loopback_only(self):
        ip = non_loopback_ipv4()
        if ip is None:
            self.skipTest("no non-loopback IPv4 address on this host")
        port = free_port()
        self.env.listen.append(f"{ip}:{port}")
        self.env.start(cleartext_auth="loopback")
        c = Client(port, host=ip)
        c.send("CAPA\r\n")
        c.line()
        self.assertNotIn("USER", c.multi())
        self.assertTrue(c.cmd("USER alice").startswith("-ERR"))
        local = self.env.connect()
        local.login("alice", PW)

    def test_per_user_policy_from_passwd(self):
        # Global EXPIRE 0 (retrieved mail goes at QUIT); bob's line says never.
        self.env.add_user_line("bob", "bob-pw", extra="expire=never login_delay=0")
        mb = simple_message("bob's")
        ub = uidl_of(self.env.deliver("bob", mb).name)
        self.env.start(expire=0)
        c = self.env.connect()
        c.login("bob", "bob-pw")
        c.send("CAPA\r\n")
        c.line()
        self.assertIn("EXPIRE NEVER", c.multi())
        c.cmd("RETR 1")
        c.multi_raw()
        c.cmd("QUIT")
        self.env.wait_event("logout", user="bob")
        self.assertEqual(self.env.messages("bob"), {ub: mb})
        c = self.env.connect()
        c.login("alice", PW)
        c.cmd("RETR 1")
        c.multi_raw()
        c.cmd("QUIT")
        self.env.wait_event("logout", user="alice")
        self.assertNotIn(self.uidls[0], self.env.messages("alice"))

    def test_log_level_warn(self):
        self.env.start(log_level="warn", max_sessions=1)
        a = self.env.connect()
        a.login("alice", PW)
        b = Client(self.env.port, greeting=False)
        self.assertTrue(b.line().startswith("-ERR [SYS/TEMP]"))
        self.env.wait_event("refused")            # a warning: logged
        a.cmd("QUIT")
        a.is_closed()
        time.sleep(0.3)
        self.assertEqual(self.env.events("connect"), [], "info logged at warn")
        self.assertEqual(self.env.events("logout"), [], "info logged at warn")

    def test_maildrop_error_is_sys_temp(self):
        # The maildir path is a file: the maildrop cannot be opened.
        bad = self.env.srv / "not-a-dir"
        bad.write_text("x")
        self.env.add_user_line("erin", "erin-pw", maildir=bad, create=False)
        self.env.start()
        c = self.env.connect()
        c.cmd("USER erin")
        r = c.cmd("PASS erin-pw")
        self.assertTrue(r.startswith("-ERR [SYS/TEMP]"), r)
        self.env.wait_event("maildrop_error", user="erin")
        # The session stays usable and other users are unaffected.
        c.login("alice", PW)
        self.assertTrue(c.cmd("STAT").startswith("+OK 3 "))

    def test_expire_days(self):
        old = time.time() - 5 * 86400
        u_old = uidl_of(self.env.deliver("alice", simple_message("old"),
                                         ts=int(old), mtime=old).name)
        # A name whose leading number is no real time ("1.x" = 1970) is
        # never taken for an old message.
        u_odd = uidl_of(self.env.deliver("alice", simple_message("odd name"),
                                         ts=1).name)
        self.env.start(expire=2)
        c = self.env.connect()
        c.login("alice", PW)
        self.assertTrue(c.cmd("STAT").startswith("+OK 5 "))
        c.cmd("QUIT")
        self.env.wait_event("logout", user="alice")
        left = self.env.messages("alice")
        self.assertNotIn(u_old, left, "message older than expire kept")
        self.assertIn(u_odd, left, "a name without a real time was expired")
        self.assertEqual(sorted(left), sorted(self.uidls + [u_odd]))


class AdminToolTest(PoboxTestCase):

    def listed(self):
        """User names printed by `pobox user list` (first word of a line)."""
        r = self.env.pobox("user", "list", check=True)
        return [x.split()[0] for x in r.stdout.splitlines() if x.strip()]

    def login_result(self, user, pw):
        with self.env.connect() as c:
            c.cmd(f"USER {user}")
            return c.cmd(f"PASS {pw}")

    def test_user_add_list_passwd_del(self):
        env = self.env
        env.write_config()
        md = env.add_user("carol", "first pw")
        for sub in ("cur", "new", "tmp"):
            self.assertTrue((md / sub).is_dir(), f"{md}/{sub} missing")
        line = [x for x in env.passwd.read_text().splitlines() if x.startswith("carol:")]
        self.assertEqual(len(line), 1)
        fields = line[0].split(":")
        self.assertRegex(fields[1], r"^\$(y|6|2b|7)\$")
        self.assertNotIn("first pw", env.passwd.read_text())
        env.add_user("dave", "dave-pw")
        self.assertEqual(sorted(self.listed()), ["carol", "dave"])
        # Duplicates and bad names are refused, the file stays as it was.
        before = env.passwd.read_text()
        for name in ("carol", "../etc", "a:b", ".hidden", "x" * 65, ""):
            r = env.pobox("user", "add", name, input="pw\n")
            self.assertNotEqual(r.returncode, 0, f"user add {name!r} accepted")
        self.assertEqual(env.passwd.read_text(), before)
        # No password, no user; passwd of an unknown user fails.
        r = env.pobox("user", "add", "eve", input="")
        self.assertNotEqual(r.returncode, 0, "user added with no password")
        r = env.pobox("user", "passwd", "nobodyhere", input="pw\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(env.passwd.read_text(), before)

        d = env.start()
        m = simple_message("for carol")
        env.deliver("carol", m)
        self.assertTrue(self.login_result("carol", "first pw").startswith("+OK"))
        # passwd while the daemon runs: picked up without a restart.
        owner = env.passwd.stat()
        env.pobox("user", "passwd", "carol", input="second pw\n", check=True)
        self.assertNotIn("first pw", env.passwd.read_text())
        if os.geteuid() == 0:
            st = env.passwd.stat()
            self.assertEqual((st.st_uid, st.st_mode), (owner.st_uid, owner.st_mode),
                             "pobox user passwd changed the passwd file owner; "
                             "the auth process can no longer read it")
        end = time.monotonic() + 5
        while True:
            r = self.login_result("carol", "second pw")
            if r.startswith("+OK") or time.monotonic() > end:
                break
            time.sleep(0.3)
        self.assertTrue(r.startswith("+OK"), f"new password: {r}")
        self.assertTrue(self.login_result("carol", "first pw").startswith("-ERR [AUTH]"))
        env.pobox("user", "del", "dave", check=True)
        self.assertEqual(self.listed(), ["carol"])
        self.assertNotEqual(env.pobox("user", "del", "dave").returncode, 0)
        end = time.monotonic() + 5
        while True:
            r = self.login_result("dave", "dave-pw")
            if r.startswith("-ERR") or time.monotonic() > end:
                break
            time.sleep(0.3)
        self.assertTrue(r.startswith("-ERR [AUTH]"), f"deleted user: {r}")
        self.assertTrue(d.alive())


if __name__ == "__main__":
    unittest.main()
