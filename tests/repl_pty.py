#!/usr/bin/env python3
"""Drives the lrun REPL through a pseudo-terminal, as a person would, for
tests/repl_spec.lua: Ctrl-C cancels a line, Tab completes a field and a
module function, Ctrl-D leaves. Prints what the terminal showed, then
"status N".

Usage: python3 tests/repl_pty.py build/lrun
"""
import os
import pty
import select
import sys
import time

lrun = sys.argv[1]
pid, fd = pty.fork()
if pid == 0:
    os.environ["LRUN_HISTORY"] = ""
    os.execv(lrun, [lrun])
out = b""


def read_until(marker, timeout=20.0):
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


def send(b, wait_for=b"lrun> "):
    """Types b, then waits for the next prompt (so a Ctrl-C never arrives
    before readline is reading)."""
    os.write(fd, b)
    read_until(wait_for)


read_until(b"lrun> ")
os.write(fd, b"1 + ")
read_until(b"1 + ")
send(b"\x03")               # Ctrl-C cancels the line
send(b"40 + 2\r")
send(b"x = {alpha = 1}\r")
send(b"x.al\t\r")          # completes to x.alpha
send(b"lrun.lo\t(nil)\r")  # completes to lrun.load
os.write(fd, b"\x04")
read_until(b"\n", 5.0)
_, status = os.waitpid(pid, 0)
print(out.decode(errors="replace"))
print("status", status)
