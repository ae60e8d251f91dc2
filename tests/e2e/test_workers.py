"""test_workers.py: poboxd with several serving processes (workers = 2): a
supervising parent and, per slot, a login and a mail process with their
own SO_REUSEPORT listeners; maildrop locks across processes, signals
forwarded, a dead process replaced, login processes replaced on reload."""

import os
import signal
from pathlib import Path

from harness import IS_ROOT, PoboxTestCase, child_pids, simple_message, wait_for

PW = "workers-pw"


def children(pid):
    """Serving PIDs (login and mail): children of pid but the auth
    process, sorted."""
    out = []
    for c in child_pids(pid):
        try:
            if Path(f"/proc/{c}/comm").read_text().strip() != "poboxd-auth":
                out.append(c)
        except OSError:
            pass
    return sorted(out)


def uid_of(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Uid line")



class WorkersTest(PoboxTestCase):

    def start_two(self, users=("alice",), **overrides):
        for u in users:
            self.env.add_user(u, PW)
        d = self.env.start(workers="2", **overrides)
        kids = wait_for(lambda: len(children(d.pid)) == 4 and children(d.pid),
                        "two login and two mail processes")
        self.env.wait_event("started", count=4)
        return d, kids

    def role(self, d, name):
        return sorted(d.roles()[name])

    def kill_and_wait(self, d, name):
        """SIGKILLs the first process of role name and waits until the
        master has replaced it (four children again); the old pids."""
        old = self.role(d, name)
        os.kill(old[0], signal.SIGKILL)
        self.env.wait_event("worker_died", role=name)
        wait_for(lambda: (lambda kids: len(kids) == 4 and old[0] not in kids)(
                 children(d.pid)), f"a replacement {name} process")
        return old

    def test_processes_and_privileges(self):
        d, kids = self.start_two()
        self.assertEqual(len(self.env.events("started")), 4)
        self.assertEqual(len(self.env.events("started", role="login")), 2)
        self.assertEqual(len(self.env.events("started", role="mail")), 2)
        self.assertEqual(len(self.role(d, "login")), 2)
        self.assertEqual(len(self.role(d, "mail")), 2)
        self.assertEqual(len(self.env.events("master_started", workers=2)), 1)
        # The master keeps root to start the roles (privsep); it accepts
        # nothing. Every process that serves drops it.
        for pid in kids + d.roles()["auth"]:
            uids = uid_of(pid)
            if IS_ROOT:
                self.assertNotIn(0, uids, f"pid {pid} serves as root")

    def test_sessions_and_lock_across_processes(self):
        users = [f"u{i}" for i in range(6)]
        d, kids = self.start_two(users=users)
        for u in users:
            self.env.deliver(u, simple_message(f"for {u}"))
        holders = []
        for u in users:
            c = self.env.connect()
            c.login(u, PW)
            self.assertEqual(c.ok("STAT"), "+OK 1 " + c.ok("LIST 1").split()[2])
            holders.append(c)
        # Every further login to a held maildrop is refused, whichever
        # worker takes the connection (flock works across processes).
        for _ in range(8):
            with self.env.connect() as c:
                c.ok("USER u0")
                r = c.cmd(f"PASS {PW}")
                self.assertTrue(r.startswith("-ERR [IN-USE]"), r)
        pids = {e["pid"] for e in self.env.events("started")}
        self.assertEqual(len(pids), 4)
        for c in holders:
            c.ok("QUIT")
            c.close()
        # The logout line is written once the reply has drained: wait for it.
        self.env.wait_event("logout", count=len(users), reason="quit")
        self.assertEqual(len(self.env.events("logout", reason="quit")), len(users))

    def test_sighup_reaches_workers(self):
        # The mail processes reload; the login processes (chrooted, they
        # cannot read the configuration) are replaced by new ones started
        # with it, and the old ones end.
        d, kids = self.start_two()
        mail, login = self.role(d, "mail"), self.role(d, "login")
        self.env.write_config(workers="2", implementation="reloaded-impl")
        d.signal(signal.SIGHUP)
        self.env.wait_event("reloaded", count=2)
        self.env.wait_event("login_retired", count=2)
        for _ in range(6):
            with self.env.connect() as c:
                r = c.cmd("CAPA")
                self.assertTrue(r.startswith("+OK"), r)
                lines = c.multi_raw()
                self.assertIn(b"IMPLEMENTATION reloaded-impl", lines)
                c.login("alice", PW)
                c.ok("QUIT")
        self.assertEqual(self.role(d, "mail"), mail)
        new = self.role(d, "login")
        self.assertEqual(len(new), 2)
        self.assertEqual(set(new) & set(login), set())
        self.assertEqual(self.env.events("worker_died"), [])

    def test_reload_keeps_sessions_of_old_login_process(self):
        # A TLS-less session still in AUTHORIZATION at the reload stays
        # with its old login process, which ends after it.
        d, kids = self.start_two()
        held = [self.env.connect() for _ in range(4)]
        d.signal(signal.SIGHUP)
        self.env.wait_event("retiring", count=2)
        # The old processes still answer them; one logs in and is handed
        # to the mail process as ever.
        for c in held[1:]:
            self.assertTrue(c.cmd("NOOP").startswith("-ERR"))
        held[0].login("alice", PW)
        self.assertTrue(held[0].ok("STAT").startswith("+OK 0 "))
        held[0].ok("QUIT")
        for c in held[1:]:
            c.ok("QUIT")
        self.env.wait_event("login_retired", count=2)
        self.assertEqual(len(self.role(d, "login")), 2)

    def test_sigterm_stops_all_and_deletes_nothing(self):
        d, kids = self.start_two()
        self.env.deliver("alice", simple_message("keep me"))
        c = self.env.connect()
        c.login("alice", PW)
        c.ok("DELE 1")
        self.assertEqual(d.stop(), 0)
        for pid in kids:
            self.assertFalse(Path(f"/proc/{pid}").exists() and
                             "zombie" not in Path(f"/proc/{pid}/status").read_text(),
                             f"worker {pid} still running")
        self.assertEqual(len(self.env.messages("alice")), 1)
        self.assertEqual(len(self.env.events("logout", reason="shutdown")), 1)
        c.close()

    def test_dead_worker_is_replaced(self):
        d, kids = self.start_two()
        login = self.kill_and_wait(d, "login")
        self.assertIn(login[1], children(d.pid))
        self.env.wait_event("started", count=5)
        for _ in range(4):
            with self.env.connect() as c:
                c.login("alice", PW)
                c.ok("QUIT")

    def test_dead_mail_process_is_replaced(self):
        # A session handed over in the clear lives in the mail process:
        # it dies with it; its login process ends too (it cannot hand
        # over any more) and both come back.
        d, kids = self.start_two()
        mail = self.role(d, "mail")
        os.kill(mail[0], signal.SIGKILL)
        self.env.wait_event("worker_died", role="mail")
        wait_for(lambda: (len(self.role(d, "mail")) == 2 and
                          mail[0] not in self.role(d, "mail") and
                          len(self.role(d, "login")) == 2),
                 "a replacement mail process and its login process")
        self.env.wait_event("started", count=6)
        for _ in range(6):
            with self.env.connect() as c:
                c.login("alice", PW)
                c.ok("QUIT")

    def test_reload_reaches_replacement_workers(self):
        # A process started after a SIGHUP runs the new configuration and
        # the passwd file it names, not the ones the parent started with.
        d, kids = self.start_two()
        self.env.passwd = self.env.srv / "passwd.new"
        self.env.write_config(workers="2")
        self.env.add_user("bob", PW)
        os.kill(d.pid, signal.SIGHUP)
        self.env.wait_event("reloaded", count=2)
        self.kill_and_wait(d, "mail")
        # 4, 2 new login processes at the reload, then mail and login.
        self.env.wait_event("started", count=8)
        # SO_REUSEPORT spreads connections by source port: eight reach
        # the replacement too, all but surely.
        for _ in range(8):
            with self.env.connect() as c:
                c.login("bob", PW)
                c.ok("QUIT")

    def test_limits_are_shared_by_all_workers(self):
        # max_sessions counts every worker's sessions: exactly the limit is
        # admitted whichever worker the kernel picks, then -ERR [SYS/TEMP].
        d, kids = self.start_two(max_sessions="6", max_sessions_per_ip="6")
        held = [self.env.connect() for _ in range(6)]
        for c in held:
            self.assertTrue(c.greeting.startswith("+OK"), c.greeting)
        for _ in range(4):
            extra = self.env.connect()
            self.assertTrue(extra.greeting.startswith("-ERR [SYS/TEMP]"), extra.greeting)
            extra.close()
        held.pop().close()
        # A slot frees once the server saw the close.
        c = wait_for(lambda: (lambda x: x if x.greeting.startswith("+OK")
                                           else x.close())(self.env.connect()),
                     "a free slot")
        held.append(c)
        # A login process that dies takes its sessions' slots with it.
        self.kill_and_wait(d, "login")
        self.env.wait_event("started", count=5)
        alive = []
        for c in held:
            try:
                c.cmd("NOOP")
                alive.append(c)
            except Exception:
                c.close()
        admitted = []
        for _ in range(6 - len(alive)):
            c = self.env.connect()
            self.assertTrue(c.greeting.startswith("+OK"), c.greeting)
            admitted.append(c)
        for c in alive + admitted:
            c.close()
