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


def read(t=1.0):
    global out
    end = time.time() + t
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:
                return


def send(b, t=0.8):
    os.write(fd, b)
    read(t)



read(1.5)
send(b"1 + \x03")           # Ctrl-C cancels the line
send(b"40 + 2\r")
send(b"x = {alpha = 1}\r")
send(b"x.al\t\r")          # completes to x.alpha
send(b"lrun.lo\t(nil)\r", 1.5)   # completes to lrun.load
send(b"\x04", 1.0)
_, status = os.waitpid(pid, 0)
print(out.decode(errors="replace"))
print("status", status)
