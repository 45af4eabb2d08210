#!/usr/bin/env python3
"""Drives the generate tool's conversation mode (lrun -m MODEL -cnv)
through a pseudo-terminal, for tests/cli_spec.lua: a message, Ctrl-C while
the model answers (the answer stops, the prompt comes back), another
message stopped the same way, then Ctrl-C at the prompt (the conversation ends, status 0).
Prints what the terminal showed, then "status N".

Usage: python3 tests/chat_pty.py build/lrun MODEL
"""
import os
import pty
import select
import sys
import time

lrun, model = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.environ["LRUN_HISTORY"] = ""
    os.execv(lrun, [lrun, "-m", model, "-cnv", "--temp", "0", "-n", "4000", "--ignore-eos", "--log-disable"])
out = b""


def read_until(marker, timeout=60.0):
    """Reads what the terminal shows until marker appears after what was read before."""
    global out
    begin = len(out)
    end = time.time() + timeout
    while time.time() < end and marker not in out[begin:]:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:
                return


def read_bytes(n, timeout=60.0):
    """Reads until n more bytes have come."""
    global out
    begin = len(out)
    end = time.time() + timeout
    while time.time() < end and len(out) - begin < n:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:
                return


read_until(b"> ")
os.write(fd, b"Count from 1 to 200, one number a line.\r")
read_bytes(200)            # the answer is streaming
os.write(fd, b"\x03")      # Ctrl-C: stop it
read_until(b"> ")
os.write(fd, b"Say hi.\r")
read_bytes(20)
os.write(fd, b"\x03")      # stop this answer too
read_until(b"> ")
os.write(fd, b"\x03")      # Ctrl-C at the prompt: the end
read_until(b"\x00", timeout=10.0)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
sys.stdout.write("\nstatus %d\n" % (os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)))
