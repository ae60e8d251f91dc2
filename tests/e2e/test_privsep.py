"""test_privsep.py: the privilege-separated process model. Each role's
credentials as the kernel sees them (/proc/PID/status: uids, gids,
groups, NoNewPrivs, Seccomp, /proc/PID/root: the login processes'
chroot), the passwd file out of the serving processes' reach and the
mail out of the login processes' (tried from inside them through the
POBOXD_TEST_OPEN hook), the auth process replaced when it dies, and
--single-process."""

import base64
import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
import unittest

from harness import (AUTH_USER, IS_ROOT, LOGIN_USER, POBOXD, REPO, TIMEOUT, Client,
                     Daemon, UNPRIV_USER, PoboxTestCase, child_pids, free_port,
                     proc_status, simple_message, sized_message, wait_for)

LOGIN_CHROOT = "/run/pobox/login"   # the default

PW = "privsep-pw"


def ids(st, key):
    return [int(x) for x in st[key].split()]


_libc = ctypes.CDLL(None, use_errno=True)
SYS_KCMP, KCMP_FILE = 312, 0   # x86_64


def landlock_abi():
    """The kernel's Landlock ABI version (0: none); x86_64 only."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    v = libc.syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(v, 0)


def same_file(pid1, fd1, pid2, fd2):
    """True when the two descriptors are one open file description (kcmp(2))."""
    return _libc.syscall(SYS_KCMP, pid1, pid2, KCMP_FILE, fd1, fd2) == 0


def memory_holds(pid, needle):
    """True when needle is in a writable mapping of process pid (its heap,
    anonymous memory, stacks): what the process has learnt."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
        for line in maps:
            parts = line.split()
            if "w" not in parts[1]:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if hi - lo > 1 << 30:      # a sanitizer's shadow memory
                continue
            tail = b""
            for at in range(lo, hi, 1 << 20):
                try:
                    mem.seek(at)
                    chunk = tail + mem.read(min(1 << 20, hi - at))
                except (OSError, ValueError, OverflowError):
                    break
                if needle in chunk:
                    return True
                tail = chunk[-len(needle):]
    return False


def task_children(pid):
    """The children of every thread of pid."""
    kids = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids += [int(k) for k in f.read().split()]
        except OSError:
            pass
    return kids


def alive(pid):
    """True while pid exists and is no zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def listening_inodes():
    """Socket inodes of TCP listeners (/proc/net/tcp*: state 0A)."""
    out = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(f) as fh:
            for line in fh.read().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A":
                    out.add(parts[9])
    return out



class PrivsepTest(PoboxTestCase):
    """Also run as non-root: the roles split the same, without the uids."""

    def setUp(self):
        super().setUp()
        self.env.add_user("alice", PW)
        self.env.deliver("alice", simple_message("privsep"))

    def start(self, **kw):
        d = self.env.start(**kw)
        roles = wait_for(lambda: (lambda r: r if r["auth"] and r["login"] and r["mail"]
                                  else None)(d.roles()), "auth, login and mail processes")
        return d, roles

    def filtered(self):
        """False for a sanitizer build: it runs without seccomp (logged)."""
        time.sleep(0.1)
        return not self.env.events("sandbox_skipped", reason="sanitizer")

    def login_ok(self):
        with self.env.connect() as c:
            c.login("alice", PW)
            self.assertTrue(c.ok("STAT").startswith("+OK 1 "))
            c.ok("QUIT")

    @unittest.skipUnless(IS_ROOT, "the roles' users need root")
    def test_role_credentials(self):
        d, roles = self.start(workers="2")
        roles["login"] = d.worker_pids(2, role="login")
        roles["mail"] = d.worker_pids(2, role="mail")
        self.login_ok()
        auth = pwd.getpwnam(AUTH_USER)
        serv = pwd.getpwnam(UNPRIV_USER)
        login = pwd.getpwnam(LOGIN_USER)
        self.assertEqual(len(roles["auth"]), 1, roles)
        # The master: root, to start each role as its user; it serves
        # nothing (no session is ever logged with its pid).
        st = d.proc_status()
        self.assertEqual(ids(st, "Uid"), [0] * 4)
        expect = ([(roles["auth"][0], auth, "/")] +
                  [(p, login, LOGIN_CHROOT) for p in roles["login"]] +
                  [(p, serv, "/") for p in roles["mail"]])
        for pid, pw, root in expect:
            st = proc_status(pid)
            self.assertEqual(ids(st, "Uid"), [pw.pw_uid] * 4, f"pid {pid}")
            self.assertEqual(ids(st, "Gid"), [pw.pw_gid] * 4, f"pid {pid}")
            self.assertNotIn(0, [int(x) for x in st.get("Groups", "").split()])
            self.assertEqual(st["NoNewPrivs"], "1", f"pid {pid}")
            # The login processes live in an empty root-owned directory.
            self.assertEqual(os.readlink(f"/proc/{pid}/root"), root, f"pid {pid}")
            # No capability left in any of them.
            self.assertEqual(int(st["CapEff"], 16), 0, f"pid {pid}")
            self.assertEqual(int(st["CapPrm"], 16), 0, f"pid {pid}")
            # Every thread too (the auth process's hashing threads).
            for t in os.listdir(f"/proc/{pid}/task"):
                tst = proc_status(f"{pid}/task/{t}")
                self.assertEqual(ids(tst, "Uid"), [pw.pw_uid] * 4)
                # seccomp filter mode, on every thread (TSYNC): each
                # role's own list.
                if self.filtered():
                    self.assertEqual(tst["Seccomp"], "2", f"pid {pid} thread {t}")
        cst = os.stat(LOGIN_CHROOT)
        self.assertEqual((cst.st_uid, cst.st_mode & 0o022), (0, 0))
        self.assertEqual(os.listdir(LOGIN_CHROOT), [])
        self.assertEqual(len({auth.pw_uid, serv.pw_uid, login.pw_uid}), 3)

    @unittest.skipUnless(IS_ROOT and shutil.which("setpriv"), "capabilities need root")
    def test_service_unit_capabilities(self):
        # etc/poboxd.service takes every capability but those in its
        # CapabilityBoundingSet. Under exactly those (setpriv, as systemd
        # would): -t passes (the passwd file, readable by auth_user alone,
        # parsed as that user), poboxd serves, a SIGHUP retires the old
        # login processes and SIGTERM ends every role (both are signals
        # to processes of other users: CAP_KILL). Without CAP_KILL it
        # refuses to start and says why, instead of hanging at the stop.
        unit = (REPO / "etc" / "poboxd.service").read_text()
        caps = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M).group(1).split()

        def setpriv(drop=()):
            keep = [c.lower().removeprefix("cap_") for c in caps if c not in drop]
            return ["setpriv", "--bounding-set=-all," + ",".join("+" + c for c in keep),
                    "--inh-caps=-all"]
        self.env.write_config()
        self.env.fix_owner()
        os.chmod(self.env.passwd, 0o600)
        r = subprocess.run([*setpriv(), str(POBOXD), "-t", "-c", str(self.env.conf)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        d = self.env.start(prefix=setpriv(), write=False)
        roles = wait_for(lambda: (lambda r: r if r["auth"] and r["login"] and r["mail"]
                                  else None)(d.roles()), "auth, login and mail processes")
        self.login_ok()
        d.signal(signal.SIGHUP)
        self.env.wait_event("login_retired")
        wait_for(lambda: not set(roles["login"]) & set(d.roles()["login"]),
                 "the old login processes gone")
        self.login_ok()
        children = child_pids(d.pid)
        self.assertEqual(d.stop(), 0)
        for pid in children:
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), f"child {pid} gone")
        r = subprocess.run([*setpriv(drop=("CAP_KILL",)), str(POBOXD), "-t", "-c",
                            str(self.env.conf)], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn("without CAP_KILL", r.stderr)
        d = self.env.start(prefix=setpriv(drop=("CAP_KILL",)), write=False, wait=False)
        self.assertEqual(d.proc.wait(TIMEOUT), 1)
        self.env.wait_event("privileges")
        # --single-process drops to user before it forks: every process
        # it signals is user's own, so it needs no CAP_KILL (nor chroot).
        serv = pwd.getpwnam(UNPRIV_USER)
        os.chown(self.env.passwd, serv.pw_uid, serv.pw_gid)
        single = setpriv(drop=("CAP_KILL", "CAP_SYS_CHROOT"))
        r = subprocess.run([*single, str(POBOXD), "-X", "-t", "-c", str(self.env.conf)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        d = Daemon(self.env, ("--single-process",), prefix=single)
        self.env.daemons.append(d)
        d.wait_ready()
        self.login_ok()
        self.assertEqual(d.stop(), 0)

    @unittest.skipUnless(IS_ROOT and shutil.which("unshare"), "a pid namespace needs root")
    def test_master_as_pid_1(self):
        # In a container poboxd -f is often PID 1 of its pid namespace:
        # its children's parent is then 1 from the start, which is not a
        # sign that the master died.
        self.env.write_config()
        self.env.fix_owner()
        d = self.env.start(prefix=["unshare", "--pid", "--fork", "--kill-child"],
                           write=False, wait=False)
        master = wait_for(lambda: (lambda c: c[0] if c else None)(child_pids(d.pid)),
                          "poboxd in its pid namespace")
        self.assertEqual(proc_status(master)["NSpid"].split()[-1], "1")
        d.wait_ready()
        self.login_ok()
        self.assertEqual(self.env.events("worker_died"), [])
        os.kill(master, signal.SIGTERM)
        self.assertEqual(d.proc.wait(TIMEOUT), 0)

    def test_login_process_reaches_no_socket(self):
        # An abstract AF_UNIX socket has no file permission to guard it
        # and the chroot does not hide it: a login process, which reads
        # every client octet before login, cannot open a socket to reach
        # one (EPERM, not death: glibc's syslog may try after a syslogd
        # restart), while a mail process can (the hook does reach it).
        name = f"pobox-test-{os.getpid()}-{time.monotonic_ns()}"
        lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(lsn.close)
        lsn.bind("\0" + name)
        lsn.listen(16)
        # A datagram socket needs no connect: a datagram sent with its
        # address (sendto, or sendmsg, whose address seccomp cannot see)
        # from any socket the process has (a socketpair, syslog's).
        dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(dg.close)
        dg.bind("\0" + name + "-dgram")
        os.environ["POBOXD_TEST_CONNECT"] = name
        try:
            d, roles = self.start()
        finally:
            del os.environ["POBOXD_TEST_CONNECT"]
        ev = self.env.wait_event("test_connect", role="mail")
        self.assertEqual(ev["result"], "connected", ev["_line"])
        self.assertEqual(ev["dgram"], "sent", ev["_line"])
        dg.settimeout(TIMEOUT)
        self.assertEqual(dg.recv(64), b"mail")
        ev = self.env.wait_event("test_connect", role="login")
        self.assertIn(int(ev["pid"]), roles["login"])
        if self.filtered():
            self.assertEqual(ev["result"], "denied", ev["_line"])
            self.assertEqual(proc_status(int(ev["pid"]))["Seccomp"], "2")
        # Only Landlock (Linux 6.12) scopes a datagram's address.
        if landlock_abi() >= 6:
            self.assertEqual(ev["dgram"], "denied", ev["_line"])
            self.assertEqual(self.env.events("sandbox_partial"), [])
        else:
            self.env.wait_event("sandbox_partial", reason="no_landlock_scope")
        self.login_ok()
        self.assertEqual(d.roles()["login"], roles["login"])

    def test_auth_and_workers_are_sandboxed(self):
        # Seccomp allowlists (lib/sandbox.c) once set up: every kind of
        # login, a reload and a passwd change still work under them (a
        # call off a list would kill the process). The whole e2e suite
        # runs under them too.
        self.env.add_user_line("bob", PW, extra="apop=bob-secret")
        d, roles = self.start(apop="yes", sasl_mechanisms="PLAIN SCRAM-SHA-256 CRAM-MD5")
        auth = roles["auth"][0]
        mail = roles["mail"]
        for pid in roles["auth"] + roles["login"] + roles["mail"]:
            st = proc_status(pid)
            self.assertEqual(st["NoNewPrivs"], "1", f"pid {pid}")
            if self.filtered():
                self.assertEqual(st["Seccomp"], "2", f"pid {pid}")
        self.login_ok()
        self.login_ok()           # the cache
        with self.env.connect() as c:
            c.ok("USER alice")
            self.assertTrue(c.cmd("PASS wrong").startswith("-ERR"))
        with self.env.connect() as c:
            r = c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0" + PW.encode()).decode())
            self.assertTrue(r.startswith("+OK"), r)
        with self.env.connect() as c:
            r = c.cmd("AUTH SCRAM-SHA-256 " +
                      base64.b64encode(b"n,,n=alice,r=0123456789abcdef").decode())
            self.assertTrue(r.startswith("+ "), r)
            c.cmd("*")
        self.env.add_user("carol", PW)     # the passwd file changes
        d.signal(signal.SIGHUP)
        self.env.wait_event("auth_reloaded")
        with self.env.connect() as c:
            c.login("carol", PW)
        # Auth and mail reload in place; login processes are replaced.
        self.assertEqual(d.roles()["auth"], [auth])
        self.assertEqual(d.roles()["mail"], mail)
        self.env.wait_event("login_retired")
        self.assertEqual(self.env.events("auth_died"), [])
        self.assertEqual(self.env.events("worker_died"), [])

    def verifier(self):
        """A test OAuth verifier: good-token is alice's, slow-token hangs."""
        v = self.env.srv / "verify-token"
        v.write_text("#!/bin/sh\nread -r token\ncase \"$token\" in\n"
                     "good-token) echo alice ;;\nslow-token) sleep 30 ;;\n"
                     "*) exit 1 ;;\nesac\n")
        os.chmod(v, 0o755)
        return str(v)

    def oauth_login(self):
        """AUTH OAUTHBEARER with alice's token: the status line."""
        with self.env.connect() as c:
            r = c.cmd("AUTH OAUTHBEARER " +
                      base64.b64encode(b"n,,\x01auth=Bearer good-token\x01\x01").decode())
            if r.startswith("+OK"):
                c.ok("QUIT")
            return r

    def oauth_pid(self, d, other_than=None):
        return wait_for(lambda: (lambda p: p if p and p != other_than else None)(
            d.roles()["oauth"]), "the OAuth verifier process")[0]

    def test_oauth_verifier_runs_apart(self):
        # oauth_verify_command runs in a process of its own (poboxd-oauth):
        # the login processes keep their chroot and filter; the verifier
        # process runs as login_user, owns nothing, may gain nothing and
        # holds nothing of the master's (no listener); auth takes the
        # verdict from it alone.
        md = self.env.maildir("alice")
        msg = next((md / "new").iterdir())
        os.environ["POBOXD_TEST_OPEN"] = f"{self.env.passwd}:{msg}:{md / 'new'}"
        try:
            d, roles = self.start(oauth_verify_command=self.verifier(), workers="2")
        finally:
            del os.environ["POBOXD_TEST_OPEN"]
        oauth = self.oauth_pid(d)
        # Neither the passwd file nor the mail (nor, so, can the
        # verifier it runs).
        if IS_ROOT:
            for path in (self.env.passwd, msg, md / "new"):
                ev = self.env.wait_event("test_open", role="oauth", path=str(path))
                self.assertEqual(ev["result"], "denied", ev["_line"])
                self.assertEqual(int(ev["pid"]), oauth)
        self.assertEqual(len(d.roles()["oauth"]), 1)
        self.assertNotIn(oauth, d.roles()["worker"])
        self.assertEqual(self.env.events("sandbox_skipped", reason="oauth_verify_command"),
                         [])
        for pid in d.worker_pids(2, role="login"):
            if IS_ROOT:
                self.assertEqual(os.readlink(f"/proc/{pid}/root"), LOGIN_CHROOT)
            if self.filtered():
                self.assertEqual(proc_status(pid)["Seccomp"], "2", f"pid {pid}")
        st = proc_status(oauth)
        self.assertEqual(st["NoNewPrivs"], "1")
        self.assertEqual(int(st["CapEff"], 16), 0)
        self.assertEqual(int(st["CapPrm"], 16), 0)
        # Not chrooted: the command needs the file system.
        self.assertEqual(os.readlink(f"/proc/{oauth}/root"), "/")
        if IS_ROOT:
            login = pwd.getpwnam(LOGIN_USER)
            self.assertEqual(ids(st, "Uid"), [login.pw_uid] * 4)
            self.assertEqual(ids(st, "Gid"), [login.pw_gid] * 4)
            self.assertEqual(st.get("Groups", ""), "")
        listeners = listening_inodes()
        for fd in os.listdir(f"/proc/{oauth}/fd"):
            target = os.readlink(f"/proc/{oauth}/fd/{fd}")
            self.assertNotIn(target[len("socket:["):-1] if target.startswith("socket:[")
                             else None, listeners, f"fd {fd}")
            self.assertFalse(target.startswith("/memfd:pobox"), target)
        self.assertTrue(self.oauth_login().startswith("+OK"))
        self.env.wait_event("login", user="alice", mech="OAUTHBEARER")
        self.login_ok()
        self.assertEqual(self.env.events("worker_died"), [])

    def test_oauth_verifier_stuck_is_tempfail(self):
        # A verifier over oauth_verify_timeout is killed by its process; a
        # verifier process that answers nothing at all (stopped here) runs
        # out auth's own bound (the timeout + 2 s): a tempfail, never a
        # yes. It serves again once it runs.
        d, roles = self.start(oauth_verify_command=self.verifier(),
                              oauth_verify_timeout="1")
        oauth = self.oauth_pid(d)
        with self.env.connect() as c:
            t0 = time.monotonic()
            r = c.cmd("AUTH OAUTHBEARER " +
                      base64.b64encode(b"n,,\x01auth=Bearer slow-token\x01\x01").decode())
            self.assertTrue(r.startswith("-ERR [SYS/TEMP]"), r)
            self.assertLess(time.monotonic() - t0, 10)
        os.kill(oauth, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            r = self.oauth_login()
            self.assertTrue(r.startswith("-ERR [SYS/TEMP]"), r)
            self.assertLess(time.monotonic() - t0, 10)
            self.env.wait_event("oauth_tempfail", why="verifier_timeout")
        finally:
            os.kill(oauth, signal.SIGCONT)
        self.assertTrue(self.oauth_login().startswith("+OK"))
        self.assertEqual(d.roles()["oauth"], [oauth])

    def test_oauth_verifier_respawned(self):
        # Killed, the verifier process is started again (and gets a new
        # channel to auth); so it is when auth dies. The next login works.
        d, roles = self.start(oauth_verify_command=self.verifier())
        oauth = self.oauth_pid(d)
        self.assertTrue(self.oauth_login().startswith("+OK"))
        # A verifier left hanging by the killed process does not run on:
        # the master, its subreaper, kills it.
        c = self.env.connect()
        self.addCleanup(c.close)
        c.send("AUTH OAUTHBEARER " +
               base64.b64encode(b"n,,\x01auth=Bearer slow-token\x01\x01").decode() + "\r\n")
        # Its shell in the sleep: the token read (else it may end alone).
        hung = wait_for(lambda: [p for k in task_children(oauth) for p in
                                 [k] + task_children(k) if task_children(k)],
                        "the verifier command")
        os.kill(oauth, signal.SIGKILL)
        self.env.wait_event("oauth_died")
        self.assertTrue(c.line().startswith("-ERR [SYS/TEMP]"))
        wait_for(lambda: not any(alive(p) for p in hung), "the hung verifier to go")
        self.env.wait_event("orphan_killed")
        oauth = self.oauth_pid(d, other_than=[oauth])
        wait_for(lambda: self.oauth_login().startswith("+OK"), "an OAuth login")
        os.kill(d.roles()["auth"][0], signal.SIGKILL)
        self.env.wait_event("auth_died")
        self.oauth_pid(d, other_than=[oauth])
        wait_for(lambda: self.oauth_login().startswith("+OK"), "an OAuth login",
                 timeout=15)
        self.assertTrue(d.alive())

    def test_oauth_verifier_follows_reload(self):
        # SIGHUP: a verifier process once oauth_verify_command is set, a
        # new one when it changes, none once it is unset.
        d, roles = self.start()
        self.assertEqual(d.roles()["oauth"], [])
        self.env.write_config(oauth_verify_command=self.verifier())
        d.signal(signal.SIGHUP)
        oauth = self.oauth_pid(d)
        wait_for(lambda: self.oauth_login().startswith("+OK"), "an OAuth login")
        self.env.write_config(oauth_verify_timeout="3")
        d.signal(signal.SIGHUP)
        self.env.wait_event("oauth_replaced")
        self.oauth_pid(d, other_than=[oauth])
        wait_for(lambda: self.oauth_login().startswith("+OK"), "an OAuth login")
        self.env.write_config(oauth_verify_command="")
        d.signal(signal.SIGHUP)
        wait_for(lambda: not d.roles()["oauth"], "the verifier process to end")
        self.assertEqual(self.env.events("oauth_died"), [])
        self.login_ok()

    @unittest.skipUnless(IS_ROOT, "file permissions bind only below root")
    def test_auth_reload_needs_only_its_files(self):
        # The aliases file is the serving user's alone: a SIGHUP reloads
        # auth (settings and passwd file) without it, and the workers
        # (which resolve aliases) with it.
        aliases = self.env.srv / "aliases"
        aliases.write_text("postmaster@example.org: alice\n")
        lport = free_port()
        self.env.write_config(aliases_file=aliases, local_domains="example.org",
                              lmtp_listen=f"127.0.0.1:{lport}")
        os.chmod(aliases, 0o600)
        d, roles = self.start()
        self.env.passwd = self.env.srv / "passwd.new"
        self.env.write_config()
        os.chmod(aliases, 0o600)
        self.env.add_user("dora", PW)
        d.signal(signal.SIGHUP)
        self.env.wait_event("auth_reloaded")
        self.env.wait_event("reloaded")
        self.assertEqual(self.env.events("reload_failed"), [])
        with self.env.connect() as c:
            c.login("dora", PW)

    @unittest.skipUnless(IS_ROOT, "file permissions bind only below root")
    def test_serving_process_cannot_open_passwd_file(self):
        md = self.env.maildir("alice")
        msg = next((md / "new").iterdir())
        os.environ["POBOXD_TEST_OPEN"] = f"{self.env.passwd}:{msg}:{md / 'new'}"
        try:
            d, roles = self.start()
        finally:
            del os.environ["POBOXD_TEST_OPEN"]
        # The mail process: the mail, not the passwd file.
        ev = self.env.wait_event("test_open", role="mail", path=str(self.env.passwd))
        self.assertEqual(ev["result"], "denied", ev["_line"])
        self.assertIn(int(ev["pid"]), roles["mail"])
        ev = self.env.wait_event("test_open", role="mail", path=str(msg))
        self.assertEqual(ev["result"], "opened", ev["_line"])
        # The login process, which reads every client byte before login:
        # neither (its chroot is empty; the paths do not exist there).
        for path in (self.env.passwd, msg, md / "new"):
            ev = self.env.wait_event("test_open", role="login", path=str(path))
            self.assertNotEqual(ev["result"], "opened", ev["_line"])
            self.assertIn(int(ev["pid"]), roles["login"])
        # And the passwd file is open in no serving process, nor any
        # maildir in a login process, even after a login.
        self.login_ok()
        for pid in roles["mail"] + roles["login"]:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                self.assertNotEqual(target, str(self.env.passwd))
                if pid in roles["login"]:
                    self.assertFalse(target.startswith(str(self.env.mail_root)), target)

    @unittest.skipUnless(IS_ROOT and os.uname().machine == "x86_64",
                         "kcmp(2) on another user's process needs root")
    def test_children_hold_nothing_of_the_master(self):
        # What a child shares with the root master are the listeners it
        # serves and stdio; never the master's event loop (its epoll set
        # and signalfd: a login process taken over could take the
        # master's signals out of its epoll set and blind it) nor its
        # channels to auth and the mail processes.
        d, roles = self.start(workers="2")
        self.login_ok()
        listeners = listening_inodes()
        master_fds = []
        for fd in os.listdir(f"/proc/{d.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{d.pid}/fd/{fd}")
            except OSError:
                continue
            if int(fd) > 2 and not (target.startswith("socket:[") and
                                    target[8:-1] in listeners):
                master_fds.append((int(fd), target))
        kinds = {t for _, t in master_fds}
        self.assertIn("anon_inode:[eventpoll]", kinds)
        self.assertIn("anon_inode:[signalfd]", kinds)
        for pid in roles["auth"] + d.worker_pids(2, role="login") + \
                d.worker_pids(2, role="mail"):
            comm = open(f"/proc/{pid}/comm").read().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                for mfd, target in master_fds:
                    self.assertFalse(same_file(d.pid, mfd, pid, int(fd)),
                                     f"{comm} (pid {pid}) holds the master's "
                                     f"{target} as fd {fd}")

    @unittest.skipUnless(IS_ROOT, "reading another user's memory needs root")
    def test_login_process_knows_no_users(self):
        # CAPA before login needs the range of the users' policies, not
        # the users: a login process taken over finds no names to try.
        self.env.add_user_line("zebulon", PW, extra="expire=3 login_delay=300")
        d, roles = self.start(expire="never")
        with self.env.connect() as c:
            c.send("CAPA\r\n")
            c.line()
            caps = c.multi()
        self.assertIn("EXPIRE 3 USER", caps)
        self.assertIn("LOGIN-DELAY 300 USER", caps)
        self.login_ok()
        for pid in roles["login"]:
            self.assertFalse(memory_holds(pid, b"zebulon"), f"login process {pid}")
        # The mail process has the table (recipients): the check sees it.
        self.assertTrue(any(memory_holds(pid, b"zebulon") for pid in roles["mail"]))

    @unittest.skipUnless(IS_ROOT, "another user's smaps needs root")
    def test_serving_processes_write_only_their_own_counts(self):
        # max_sessions is shared memory; each serving process may write
        # its own row only (a login process taken over filling every
        # row would refuse all POP3 and SMTP clients): the only shared
        # mapping it could ever write is its row of the counters.
        d, roles = self.start(workers="2")
        self.login_ok()
        for pid in d.worker_pids(2, role="login") + d.worker_pids(2, role="mail"):
            writable, name = [], None
            with open(f"/proc/{pid}/smaps") as f:
                for line in f:
                    if "-" in line.split(" ", 1)[0] and not line.startswith("VmFlags"):
                        parts = line.split()
                        lo, hi = (int(x, 16) for x in parts[0].split("-"))
                        name = (" ".join(parts[5:]), hi - lo)
                    elif line.startswith("VmFlags:"):
                        flags = line.split()[1:]
                        if "sh" in flags and "mw" in flags:
                            writable.append(name)
            self.assertEqual(len(writable), 1, f"pid {pid}: {writable}")
            self.assertIn("pobox-limits", writable[0][0], f"pid {pid}: {writable}")
            self.assertLessEqual(writable[0][1], 65536)

    def test_user_table_reaches_workers_without_hashes(self):
        # Recipients come from the table auth sends (LMTP RCPT needs no
        # password data): a user added while running is found.
        lport = free_port()
        d, roles = self.start(lmtp_listen=f"127.0.0.1:{lport}",
                              local_domains="example.org")
        self.env.add_user("bob", PW)
        end = time.monotonic() + 10
        while True:
            with socket.create_connection(("127.0.0.1", lport), timeout=10) as s:
                f = s.makefile("rb")
                f.readline()
                s.sendall(b"LHLO t\r\n")
                while not f.readline().startswith(b"250 "):
                    pass
                s.sendall(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\n")
                f.readline()
                r = f.readline()
                s.sendall(b"QUIT\r\n")
            if r.startswith(b"250") or time.monotonic() > end:
                break
            time.sleep(0.3)
        self.assertTrue(r.startswith(b"250"), r)

    def test_auth_process_replaced_when_it_dies(self):
        d, roles = self.start()
        old_auth, old_workers = roles["auth"], roles["login"] + roles["mail"]
        self.login_ok()
        os.kill(old_auth[0], signal.SIGKILL)
        self.env.wait_event("auth_died")
        wait_for(lambda: (lambda r: r["auth"] and r["auth"] != old_auth and
                          r["login"] and r["mail"] and
                          set(r["worker"]).isdisjoint(old_workers))(
            d.roles()), "a new auth process and new login and mail processes")
        end = time.monotonic() + 10
        while True:
            try:
                self.login_ok()
                break
            except (AssertionError, OSError):
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
        self.assertEqual(len(self.env.events("auth_started")), 2)

    def test_sigterm_stops_every_role(self):
        d, roles = self.start()
        self.assertEqual(d.stop(), 0)
        for pid in roles["auth"] + roles["worker"]:
            self.assertFalse(os.path.exists(f"/proc/{pid}/status") and
                             "State:\tZ" not in open(f"/proc/{pid}/status").read(),
                             f"pid {pid} still running")

    def transcripts(self, env, single):
        """The replies to logins with commands pipelined behind them (the
        login command, a failed one first, SASL with and without an
        initial response, a half-close), in one process or handed over
        to a mail process."""
        if single:
            env.write_config()
            if IS_ROOT:
                serv = pwd.getpwnam(UNPRIV_USER)
                os.chown(env.passwd, serv.pw_uid, serv.pw_gid)
            d = Daemon(env, ("--single-process",))
            env.daemons.append(d)
            d.wait_ready()
        else:
            self.start()
        ir = base64.b64encode(b"\0alice\0" + PW.encode()).decode()
        scripts = [
            f"USER alice\r\nPASS {PW}\r\nSTAT\r\nLIST\r\nRETR 2\r\nTOP 1 0\r\nQUIT\r\n",
            f"CAPA\r\nUSER alice\r\nPASS nope\r\nUSER alice\r\nPASS {PW}\r\nNOOP\r\n"
            "BOGUS\r\nLIST 9\r\nQUIT\r\n",
            f"AUTH PLAIN {ir}\r\nSTAT\r\nRETR 2\r\nQUIT\r\n",
            f"AUTH PLAIN\r\n{ir}\r\nLIST\r\nQUIT\r\n",
            f"USER alice\r\nPASS {PW}\r\nRETR 2\r\nDELE 1\r\n",   # then a half-close
        ]
        out = []
        for script in scripts:
            c = Client(env.port)
            c.send(script)
            c.sock.shutdown(socket.SHUT_WR)
            out.append(c.read_all())
            c.close()
        env.wait_event("logout", count=len(scripts))
        logouts = [{k: e.get(k) for k in ("user", "reason", "commands", "bad_commands",
                                           "retr", "retr_bytes", "update")}
                   for e in env.events("logout")]
        return out, logouts

    def test_handoff_transcripts_match_single_process(self):
        # A client cannot tell the login/mail split from one process:
        # the same octets for the same pipelined input, the same logout
        # line per session.
        envs = [self.env, self.new_env()]
        for env in envs:
            if env is not self.env:
                env.add_user("alice", PW)
                env.deliver("alice", simple_message("privsep"))
            env.deliver("alice", sized_message(200000, "big"), name="2.big")
        split = self.transcripts(self.env, False)
        single = self.transcripts(envs[1], True)
        self.assertEqual(split, single)

    def test_single_process(self):
        # --single-process: today's model, one process that reads the
        # passwd file itself (as the serving user).
        if IS_ROOT:
            serv = pwd.getpwnam(UNPRIV_USER)
            self.env.write_config()
            os.chown(self.env.passwd, serv.pw_uid, serv.pw_gid)
        # Not env.start: it would give the passwd file back to auth.
        d = Daemon(self.env, ("--single-process",))
        self.env.daemons.append(d)
        d.wait_ready()
        self.login_ok()
        self.assertEqual(child_pids(d.pid), [])
        self.assertEqual(self.env.events("auth_started"), [])
        if IS_ROOT:
            self.assertEqual(ids(d.proc_status(), "Uid"),
                             [pwd.getpwnam(UNPRIV_USER).pw_uid] * 4)
