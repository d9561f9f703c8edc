"""Trusted harness that runs one untrusted Python program under limits.

Started by `ec_jax.tasks.sandbox.run_python` as
`python -I _sandbox_harness.py PROGRAM_PATH RESULT_FD`, in a new session and
an empty temporary working directory. It reads one JSON line from stdin,
`{"token": str, "limits": {"RLIMIT_CPU": n, ...}}`, replaces stdin with
/dev/null, sets each limit as both soft and hard limit, runs the program, and
writes the token to RESULT_FD only when the whole program returned normally.
A program that raises, calls `sys.exit` or `os._exit`, is killed, or runs out
of a resource never writes the token, so the parent grades it as failed
whatever it printed or whatever its exit status.

NOTE: the token is in this process's memory while the program runs, so a
program written to attack the harness could find it (for example by walking
stack frames). The check guards against wrong, crashing and hanging code,
not against code crafted to fool it.
"""

import json
import os
import resource
import sys


def _set_limits(limits: dict) -> None:
  for name, value in limits.items():
    kind = getattr(resource, name)
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
      value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def main() -> None:
  program_path = sys.argv[1]
  result_fd = int(sys.argv[2])
  header = json.loads(sys.stdin.readline())
  null_fd = os.open(os.devnull, os.O_RDONLY)
  os.dup2(null_fd, 0)
  os.close(null_fd)
  token = header["token"].encode("ascii")
  _set_limits(header["limits"])
  del header

  with open(program_path, encoding="utf-8") as stream:
    source = stream.read()
  code = compile(source, program_path, "exec")
  # Keep our own references: the program may replace os.write or sys.stdout.
  write = os.write
  exit_now = os._exit
  harness_pid = os.getpid()
  stdout, stderr = sys.stdout, sys.stderr
  # Not "__main__": a reply's `if __name__ == "__main__":` demo code (which
  # may call input()) is skipped, as when the code is imported.
  namespace = {"__name__": "__candidate__", "__builtins__": __builtins__}

  exec(code, namespace)  # pylint: disable=exec-used

  for stream in (stdout, stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  # A child the program forked also returns here; only the harness reports.
  if os.getpid() == harness_pid:
    write(result_fd, token)
  exit_now(0)


if __name__ == "__main__":
  main()
