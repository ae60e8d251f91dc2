"""test_resources.py: what poboxd costs in memory and how it shares itself:
a huge RETR streams in constant memory, a stalled reader is held back by
backpressure without starving anyone else, a thousand idle sessions live in
one small process, and 200 pipelined commands in one packet are answered in
order, octet for octet. Memory is read from /proc/PID/status; nothing here
asserts on speed."""

import hashlib
import os
import random
import resource
import socket
import time
import unittest
from pathlib import Path
from unittest import mock

from harness import (Client, Env, PoboxTestCase, crlf, crypt_hash,
                     simple_message, uidl_of, wire_retr)

PW = "res0urce pw"
MiB = 1024 * 1024
KiB = 1024
RSS_SLACK = 32 * MiB          # allowed growth over the baseline while streaming
CHUNK = 1 << 20               # client read size


# ---------------------------------------------------------------- helpers

def kib(status, key):
    """A '1234 kB' value of /proc/PID/status in octets."""
    v = status[key].split()
    assert v[1] == "kB", status[key]
    return int(v[0]) * KiB


def status(pid):
    """{key: value} of /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def rss(pid):
    return kib(status(pid), "VmRSS")


def proc_tree(pid):
    """pid and all its descendants: poboxd may serve from one process or
    from worker processes under a supervising parent."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = status(d)
            except OSError:
                continue
            children.setdefault(int(st["PPid"]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return sorted(out)


def tree_rss(pid):
    return sum(rss(p) for p in proc_tree(pid))


def fd_targets(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def serving_pid(daemon, client):
    """The process of daemon's tree that holds client's connection."""
    port = client.sock.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].rsplit(":", 1)[1], 16) == daemon.env.port and \
                int(f[2].rsplit(":", 1)[1], 16) == port and f[3] == "01":
            inode = f[9]
    assert inode is not None, f"no server socket for client port {port}"
    for pid in proc_tree(daemon.pid):
        if f"socket:[{inode}]" in fd_targets(pid).values():
            return pid
    raise AssertionError(f"no poboxd process holds the connection of port {port}")


def big_block():
    """About 64 KiB of stored lines: lines starting with '.', a lone '.',
    '..', bare LF and CRLF line ends, empty lines, 8-bit octets, a bare CR
    and a 2000-octet line. Ends with LF, so blocks concatenate cleanly."""
    lines, i = [], 0
    while sum(map(len, lines)) < 64 * KiB:
        k = i % 9
        if k == 0:
            lines.append(b".dot line %d\n" % i)
        elif k == 1:
            lines.append(b".\n")
        elif k == 2:
            lines.append(b"..\r\n")
        elif k == 3:
            lines.append(b"crlf line %d\r\n" % i)
        elif k == 4:
            lines.append(b"\n")
        elif k == 5:
            lines.append(("8bit \u00e9\u00e8 \u65e5\u672c %d\n" % i).encode())
        elif k == 6:
            lines.append(b"bare\rcr %d\n" % i)
        elif k == 7:
            lines.append(b"...three %d\r\n" % i)
        else:
            lines.append(b"x" * (i % 2000) + b"\n")
        i += 1
    return b"".join(lines)


def deliver_big(env, user, target, sizes=True):
    """Writes a message of about target octets to user's new/ without
    holding it in memory: a header, then one block repeated. Returns
    (path, stored size, RFC 1939 size)."""
    head = b"From: big@example.org\nTo: user@example.org\nSubject: big\n\n"
    block = big_block()
    count = max(1, (target - len(head)) // len(block))
    stored = len(head) + count * len(block)
    size = len(crlf(head)) + count * len(crlf(block))
    Env._seq += 1
    env.ts += 10
    name = f"{env.ts}.M{Env._seq}P{os.getpid()}.e2ebig"
    if sizes:
        name += f",S={stored},W={size}"
    md = env.maildir(user)
    tmp = md / "tmp" / name
    with open(tmp, "wb") as f:
        f.write(head)
        for _ in range(count):
            f.write(block)
    os.rename(tmp, md / "new" / name)
    env.fix_owner()
    return md / "new" / name, stored, size


def expected_wire_hash(path):
    """(sha256 hex, octets) of the un-stuffed RETR body of the stored file
    at path (CRLF line ends, final CRLF), read 1 MiB at a time."""
    h, n, hold, tail = hashlib.sha256(), 0, b"", b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            data = hold + chunk
            hold = b""
            if data.endswith(b"\r"):     # its LF may start the next chunk
                data, hold = data[:-1], b"\r"
            # Each LF gets exactly one CR before it: the same as crlf().
            out = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            h.update(out)
            n += len(out)
            tail = (tail + out)[-2:]
    out = hold
    if n + len(out) and not (tail + out).endswith(b"\r\n"):
        out += b"\r\n"
    h.update(out)
    return h.hexdigest(), n + len(out)


class Unstuffer:
    """Un-dot-stuffs a multi-line reply fed in arbitrary pieces, hashing
    what it gets and keeping only the unfinished last line."""

    def __init__(self):
        self.carry = b"\r\n"      # the line end before the first line
        self.first = True
        self.hash = hashlib.sha256()
        self.octets = 0
        self.done = False
        self.trailing = b""
        self.max_carry = 0

    def feed(self, piece):
        assert not self.done, "data after the end of the reply"
        data = self.carry + piece
        end = data.find(b"\r\n.\r\n")
        if end >= 0:
            self._emit(data[:end + 2])
            self.trailing = data[end + 5:]
            self.carry = b""
            self.done = True
            return
        cut = data.rfind(b"\r\n")
        if cut > 0:
            self._emit(data[:cut])
            data = data[cut:]
        self.carry = data
        self.max_carry = max(self.max_carry, len(data))

    def _emit(self, part):
        # part starts with CRLF and ends before one: every "CRLF.." in it
        # is a whole stuffed line start.
        part = part.replace(b"\r\n..", b"\r\n.")
        if self.first:
            part = part[2:]
            self.first = False
        self.hash.update(part)
        self.octets += len(part)


def read_reply_streaming(client, unstuffer, on_chunk=None):
    """Feeds the rest of a multi-line reply to unstuffer, 1 MiB at most at a
    time; on_chunk(received_so_far) after each piece."""
    got = 0
    while not unstuffer.done:
        piece = client.rf.read1(CHUNK)
        if not piece:
            raise AssertionError(f"connection closed after {got} octets of the reply")
        got += len(piece)
        unstuffer.feed(piece)
        if on_chunk is not None:
            on_chunk(got)
    return got


def open_fd_pos(pid, needle):
    """File offset of the fd of process pid open on a path containing
    needle, or None."""
    for fd, target in fd_targets(pid).items():
        if needle in target:
            for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
                if line.startswith("pos:"):
                    return int(line.split()[1])
    return None


def tcp_queues(local_port, remote_port):
    """(tx_queue, rx_queue) of the established TCP socket 127.0.0.1:local
    <-> remote, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        lp = int(f[1].rsplit(":", 1)[1], 16)
        rp = int(f[2].rsplit(":", 1)[1], 16)
        if lp == local_port and rp == remote_port and f[3] == "01":
            tx, rx = f[4].split(":")
            return int(tx, 16), int(rx, 16)
    raise AssertionError(f"no socket {local_port} <-> {remote_port}")


def settled_tree(daemon, timeout=10):
    """The poboxd processes once startup is over: each worker logged
    event=started (a supervisor says how many in event=master_started) and
    the set of processes did not change for half a second."""
    end = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        master = daemon.env.events("master_started")
        want = int(master[-1].get("workers", 1)) if master else 1
        procs = proc_tree(daemon.pid)
        if procs != last:
            last, since = procs, time.monotonic()
        if len(daemon.env.events("started")) >= want and \
                time.monotonic() - since >= 0.5:
            return procs
        if time.monotonic() > end:
            raise AssertionError(f"poboxd did not settle: {procs}\n"
                                 f"{daemon.env.log_text()[-2000:]}")
        time.sleep(0.05)


class SmallBufClient(Client):
    """A Client whose receive buffer is fixed small before connect, so a
    reader that stops reading stops the sender after a few hundred KiB."""

    def __init__(self, port, rcvbuf):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.rf = self.sock.makefile("rb")
        self.greeting = self.line()


class ResourceTest(PoboxTestCase):

    def setUp(self):
        super().setUp()
        # In a SANITIZE=address build, freed blocks sit in ASan's quarantine
        # (256 MiB by default) and count in VmRSS though the daemon no longer
        # holds them; a small quarantine keeps RSS about the daemon's own
        # memory. No effect on a normal build.
        opts = os.environ.get("ASAN_OPTIONS", "")
        if "quarantine_size_mb" not in opts:
            patch = mock.patch.dict(os.environ, {"ASAN_OPTIONS": (
                opts + ":" if opts else "") + "quarantine_size_mb=4"})
            patch.start()
            self.addCleanup(patch.stop)

    def login(self, user="alice", pw=PW, cls=None, **kw):
        c = cls(self.env.port, **kw) if cls else self.env.connect(timeout=30)
        self.addCleanup(c.close)
        c.login(user, pw)
        return c

    # ------------------------------------------------------------ 1: huge RETR
    def test_retr_300mb_constant_memory(self):
        env = self.env
        env.add_user_line("alice", PW)
        path, stored, size = deliver_big(env, "alice", 300 * MiB)
        want_hash, want_octets = expected_wire_hash(path)
        self.assertEqual(want_octets, size, "test's own ,W= arithmetic")
        daemon = env.start()
        c = self.login()
        self.assertEqual(c.cmd("LIST 1"), f"+OK 1 {size}")
        srv = serving_pid(daemon, c)
        base, base_tree = rss(srv), tree_rss(daemon.pid)
        hwm_before = kib(status(srv), "VmHWM")
        samples, tree_samples = [], []
        next_sample = [0]

        def sample(got):
            if got >= next_sample[0]:
                samples.append(rss(srv))
                tree_samples.append(tree_rss(daemon.pid))
                next_sample[0] = got + 4 * MiB

        c.send("RETR 1\r\n")
        self.assertEqual(c.line(), f"+OK {size} octets")
        u = Unstuffer()
        read_reply_streaming(c, u, sample)
        peak, hwm = max(samples), kib(status(srv), "VmHWM")
        print(f"\n  RETR {size} octets: serving poboxd process VmRSS baseline "
              f"{base // KiB} KiB, peak sampled {peak // KiB} KiB over "
              f"{len(samples)} samples, VmHWM {hwm_before // KiB} -> {hwm // KiB} KiB; "
              f"all {len(proc_tree(daemon.pid))} poboxd processes {base_tree // KiB} -> "
              f"peak {max(tree_samples) // KiB} KiB; client carry max "
              f"{u.max_carry} octets", flush=True)
        self.assertEqual(u.trailing, b"", "octets after the end of RETR")
        self.assertEqual(u.octets, size, "un-stuffed octets != size in +OK")
        self.assertEqual(u.hash.hexdigest(), want_hash, "RETR content differs")
        self.assertGreater(len(samples), 50, "too few RSS samples while streaming")
        self.assertLess(peak, base + RSS_SLACK, "poboxd RSS grew with the message")
        self.assertLess(hwm, base + RSS_SLACK, "poboxd VmHWM grew with the message")
        self.assertLess(max(tree_samples), base_tree + RSS_SLACK)
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        ev = env.wait_event("logout", user="alice")
        self.assertEqual((ev["retr"], ev["retr_bytes"]), ("1", str(size)))

    # ------------------------------------------------------------ 2: slow reader
    def test_stalled_reader_backpressure(self):
        env = self.env
        env.add_user_line("alice", PW)
        env.add_user_line("bob", PW)
        # No ,W=: poboxd reads the file once at login to size it.
        path, stored, size = deliver_big(env, "alice", 50 * MiB, sizes=False)
        want_hash, want_octets = expected_wire_hash(path)
        uidl = uidl_of(path.name)
        small = simple_message("for bob")
        env.deliver("bob", small)
        daemon = env.start()
        c = self.login(cls=SmallBufClient, rcvbuf=128 * KiB)
        self.assertEqual(want_octets, size, "test's own size arithmetic")
        self.assertEqual(c.cmd("LIST 1"), f"+OK 1 {size}",
                         "size computed at login")
        named = [p.name for sub in ("new", "cur")
                 for p in (env.maildir("alice") / sub).iterdir()]
        self.assertEqual(len(named), 1)
        self.assertIn(f",W={size}", named[0], "computed size not cached in the name")
        srv = serving_pid(daemon, c)
        base, base_tree = rss(srv), tree_rss(daemon.pid)
        c.send("RETR 1\r\n")
        self.assertEqual(c.line(), f"+OK {size} octets")
        # The client now reads nothing for at least 2 seconds.
        t0 = time.monotonic()
        samples, tree_samples = [], []

        def idle(until):
            while True:
                samples.append(rss(srv))
                tree_samples.append(tree_rss(daemon.pid))
                if time.monotonic() - t0 >= until:
                    return
                time.sleep(0.05)

        def where():
            pos = open_fd_pos(srv, uidl)
            self.assertIsNotNone(pos, "message file not open in poboxd")
            port = c.sock.getsockname()[1]
            return (pos, tcp_queues(env.port, port)[0], tcp_queues(port, env.port)[1])

        idle(0.5)
        # Another user is served normally meanwhile, by the very process that
        # holds the stalled session (the mail process it was handed to;
        # with several workers, connect until the kernel hands a
        # connection to that one).
        for _ in range(64):
            b = self.env.connect(timeout=30)
            self.addCleanup(b.close)
            b.login("bob", PW)
            if serving_pid(daemon, b) == srv:
                break
            b.close()
        else:
            self.fail("no connection reached the stalled session's process")
        self.assertEqual(b.cmd("STAT"), f"+OK 1 {len(crlf(small))}")
        b.send("RETR 1\r\n")
        self.assertTrue(b.line().startswith("+OK"))
        self.assertEqual(b.multi_raw(), wire_retr(small))
        self.assertTrue(b.cmd("QUIT").startswith("+OK"))
        self.assertTrue(b.is_closed())
        env.wait_event("logout", user="bob")
        idle(1.0)
        p1, tx1, rx1 = where()
        t1 = time.monotonic() - t0
        idle(max(2.0, t1 + 1.0))
        p2, tx2, rx2 = where()
        print(f"\n  stalled RETR of {size} octets: poboxd read {p1} -> {p2} octets "
              f"of the file; server send queue {tx1} -> {tx2}, client receive queue "
              f"{rx1} -> {rx2}; "
              f"serving process VmRSS baseline {base // KiB} KiB, peak "
              f"{max(samples) // KiB} KiB; all poboxd processes {base_tree // KiB} -> "
              f"peak {max(tree_samples) // KiB} KiB",
              flush=True)
        self.assertEqual(p1, p2, "poboxd kept reading the file for a stalled client")
        self.assertLess(p2, size // 4, "poboxd did not stop at the stalled client")
        # Octets read from the file but not yet in the kernel: the engine's
        # output buffer (64 KiB high-water mark plus one 16 KiB chunk made
        # at most twice as long) and what the client took with its first read.
        held = p2 - (tx2 + rx2)
        self.assertLess(held, 256 * KiB,
                        f"poboxd holds {held} octets of the stalled reply")
        self.assertLess(max(samples), base + RSS_SLACK)
        self.assertLess(max(tree_samples), base_tree + RSS_SLACK)
        # The first client reads the rest and gets every octet right.
        u = Unstuffer()
        read_reply_streaming(c, u)
        self.assertEqual(u.trailing, b"")
        self.assertEqual(u.octets, size)
        self.assertEqual(u.hash.hexdigest(), want_hash)
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        ev = env.wait_event("logout", user="alice")
        self.assertEqual((ev["reason"], ev["retr_bytes"]), ("quit", str(size)))
        self.assertLess(kib(status(srv), "VmHWM"), base + RSS_SLACK)

    # ------------------------------------------------------------ 3: 1000 sessions
    def test_thousand_idle_sessions(self):
        n_conn, n_login = 1000, 500
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = 2 * n_conn + 200      # our sockets + the daemon's (inherited limit)
        if soft < need:
            if hard != resource.RLIM_INFINITY and hard < need:
                self.skipTest(f"RLIMIT_NOFILE hard limit {hard} < {need}")
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        env = self.env
        h = crypt_hash(PW)
        users = [f"u{i:03d}" for i in range(n_login)]
        with open(env.passwd, "w") as f:
            for name in users:
                for sub in ("cur", "new", "tmp"):
                    (env.mail_root / name / sub).mkdir(parents=True)
                f.write(f"{name}:{h}:{env.mail_root / name}:\n")
        env.fix_owner()
        # Generous limits: a daemon with several workers may share them out
        # and the kernel does not spread connections evenly.
        daemon = env.start(max_sessions=4 * n_conn, max_sessions_per_ip=4 * n_conn)
        procs = settled_tree(daemon)
        base = sum(rss(p) for p in procs)
        base_threads = sum(int(status(p)["Threads"]) for p in procs)
        clients = []

        def close_all():
            for cl in clients:
                cl.close()
        self.addCleanup(close_all)
        for _ in range(n_conn):
            cl = Client(env.port, timeout=30)
            clients.append(cl)
            self.assertTrue(cl.greeting.startswith("+OK"), cl.greeting)
        # Half log in, each as its own user, all requests in flight at once.
        for cl, name in zip(clients, users):
            cl.send(f"USER {name}\r\nPASS {PW}\r\n")
        for cl, name in zip(clients, users):
            self.assertTrue(cl.line().startswith("+OK"), f"USER {name}")
            r = cl.line()
            self.assertEqual(r, "+OK Logged in, 0 messages (0 octets)", name)
        env.wait_event("login", count=n_login)
        # Every session still answers: NOOP after login, CAPA before.
        for i, cl in enumerate(clients):
            cl.send("NOOP\r\n" if i < n_login else "CAPA\r\n")
        for i, cl in enumerate(clients):
            if i < n_login:
                self.assertEqual(cl.line(), "+OK", f"NOOP in session {i}")
            else:
                self.assertTrue(cl.line().startswith("+OK"), f"CAPA in session {i}")
                self.assertIn("USER", cl.multi())
        now_procs = proc_tree(daemon.pid)
        now = sum(rss(p) for p in now_procs)
        threads = sum(int(status(p)["Threads"]) for p in now_procs)
        per = (now - base) / n_conn
        sockets = {p: sum(1 for t in fd_targets(p).values() if t.startswith("socket:"))
                   for p in now_procs}
        print(f"\n  {n_conn} sessions ({n_login} logged in): poboxd VmRSS "
              f"{base // KiB} -> {now // KiB} KiB, {per / KiB:.1f} KiB per session; "
              f"{len(now_procs)} process(es) {now_procs}, threads {base_threads} -> "
              f"{threads}, sockets per process {list(sockets.values())}", flush=True)
        # One event loop (per worker, if any) holds many sessions: no process
        # or thread per session, and the sessions' sockets are in those.
        self.assertEqual(now_procs, procs, "poboxd processes changed with sessions")
        if env.settings.get("workers", "1") == "1":
            # The master, the auth process, one login and one mail process.
            self.assertEqual(len(now_procs), 4,
                             "poboxd is not master, auth, one login, one mail process")
        self.assertEqual(threads, base_threads, "poboxd threads changed with sessions")
        self.assertGreaterEqual(sum(sockets.values()), n_conn,
                                "sessions not held by poboxd")
        self.assertLess(now - base, n_conn * 64 * KiB, "over 64 KiB per session")
        self.assertTrue(daemon.alive())
        close_all()
        env.wait_event("logout", count=n_conn, timeout=30)
        connects = [e["session"] for e in env.events("connect")]
        logouts = [e["session"] for e in env.events("logout")]
        self.assertEqual(len(connects), n_conn)
        self.assertEqual(len(set(connects)), n_conn, "session ids not unique")
        self.assertEqual(sorted(logouts), sorted(connects),
                         "not one logout line per session")
        logged = sorted(e["user"] for e in env.events("logout") if e["user"] != "-")
        self.assertEqual(logged, users)
        self.assertEqual({e["reason"] for e in env.events("logout")}, {"eof"})

    # ------------------------------------------------------------ 4: pipelining
    def test_pipelining_200_commands_one_packet(self):
        env = self.env
        env.add_user_line("alice", PW)
        msgs = [
            simple_message("p1"),
            simple_message("p2", ".dot\n..two\n.\nend\n"),
            b"Subject: crlf\r\n\r\nline\r\n.dot\r\n",
            b"Subject: no final newline\n\nlast",
            simple_message("p5", "x" * 3000 + "\n"),
        ]
        uidls = [uidl_of(env.deliver("alice", m).name) for m in msgs]
        env.start()
        c = self.login()
        sizes = []
        for i in range(1, len(msgs) + 1):
            sizes.append(int(c.cmd(f"LIST {i}").split()[2]))
        rng = random.Random(1939)
        cmds, expected = [], []
        for _ in range(200):
            kind, n = rng.choice(("LIST", "UIDL", "NOOP", "RETR")), rng.randint(1, 5)
            if kind == "NOOP":
                cmds.append("NOOP")
                expected.append(b"+OK\r\n")
            elif kind == "LIST":
                cmds.append(f"LIST {n}")
                expected.append(f"+OK {n} {sizes[n - 1]}\r\n".encode())
            elif kind == "UIDL":
                cmds.append(f"UIDL {n}")
                expected.append(f"+OK {n} {uidls[n - 1]}\r\n".encode())
            else:
                cmds.append(f"RETR {n}")
                expected.append(f"+OK {sizes[n - 1]} octets\r\n".encode()
                                + wire_retr(msgs[n - 1]))
        self.assertEqual({x.split()[0] for x in cmds}, {"LIST", "UIDL", "NOOP", "RETR"})
        payload = "".join(x + "\r\n" for x in cmds).encode()
        self.assertLess(len(payload), 4096)
        want = b"".join(expected)
        c.sock.sendall(payload)
        got = c.rf.read(len(want))
        if got != want:
            # Show the first reply that differs, with its command.
            off = 0
            for cmd, exp in zip(cmds, expected):
                if got[off:off + len(exp)] != exp:
                    self.fail(f"reply to {cmd!r} at octet {off}: expected "
                              f"{exp[:200]!r}, got {got[off:off + 200]!r}")
                off += len(exp)
        self.assertEqual(got, want)
        self.assertEqual(c.cmd("NOOP"), "+OK", "extra octets after the replies")
        self.assertTrue(c.cmd("QUIT").startswith("+OK"))
        self.assertTrue(c.is_closed())
        ev = env.wait_event("logout", user="alice")
        retrs = [int(x.split()[1]) for x in cmds if x.startswith("RETR")]
        self.assertEqual(ev["commands"], str(2 + len(msgs) + 200 + 2))
        self.assertEqual(ev["retr"], str(len(retrs)))
        self.assertEqual(ev["retr_bytes"], str(sum(sizes[n - 1] for n in retrs)))
        self.assertEqual(ev["bad_commands"], "0")


if __name__ == "__main__":
    unittest.main()
