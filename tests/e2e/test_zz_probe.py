import os, socket, time, subprocess
from test_smtp import SmtpBase, SmtpClient
from harness import TIMEOUT

class Probe(SmtpBase):
    def fds(self):
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit(): continue
            try:
                cmd = open(f"/proc/{pid}/cmdline","rb").read()
            except OSError: continue
            if b"poboxd" in cmd and str(self.env.dir).encode() in cmd:
                out[pid] = len(os.listdir(f"/proc/{pid}/fd"))
        return out
    def test_fd_probe(self):
        self.start()
        time.sleep(0.3)
        print("before", self.fds())
        for i in range(20):
            c = SmtpClient(self.smtp_port)
            c.cmd("EHLO c")
            c.cmd("MAIL FROM:<s@example.net>")
            c.cmd("RCPT TO:<alice@example.org>")
            c.send(b"BDAT 400000\r\n" + b"x" * 300000)
            time.sleep(0.05)
            c.close()
        for i in range(5):
            c = SmtpClient(self.smtp_port)
            c.cmd("EHLO c")
            c.cmd("MAIL FROM:<s@example.net>")
            c.cmd("RCPT TO:<alice@example.org>")
            c.send(b"BDAT 300000 LAST\r\n" + b"x" * 300000)
            print(c.reply())
            c.close()
        time.sleep(0.5)
        print("after", self.fds())
        print(os.listdir(self.alice_md + "/tmp") if isinstance(self.alice_md,str) else list((self.alice_md/"tmp").iterdir()))
