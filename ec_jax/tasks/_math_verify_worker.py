"""Worker process that compares math answers with math-verify.

Started by `ec_jax.tasks.math_verifier.MathVerifier` as
`python -P _math_verify_worker.py PARENT_PID MEMORY_BYTES`. It reads one JSON
request per line on stdin, `{"id": n, "gold": str, "answer": str}`, and writes
one JSON line per request on stdout, `{"id": n, "equal": bool}` or
`{"id": n, "error": str}`. The first line it writes is `{"ready": true}`.
math-verify's own signal-based timeouts are turned off here: the parent
enforces the timeout by killing this process. This file imports only the
standard library and math-verify, so it can run outside the ec_jax package.
"""

import json
import logging
import os
import resource
import signal
import sys
import threading
import time

_PARENT_POLL_S = 1.0


def _exit_when_orphaned(parent_pid: int) -> None:
  """Exit the process once its parent has died (the process is re-parented)."""
  while True:
    time.sleep(_PARENT_POLL_S)
    if os.getppid() != parent_pid:
      os._exit(0)


def _limit_memory(memory_bytes: int) -> None:
  """Cap the address space so a runaway computation fails with MemoryError."""
  if memory_bytes <= 0:
    return
  _, hard = resource.getrlimit(resource.RLIMIT_AS)
  if hard != resource.RLIM_INFINITY:
    memory_bytes = min(memory_bytes, hard)
  resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, hard))


def _write(message: dict) -> None:
  sys.stdout.write(json.dumps(message) + "\n")
  sys.stdout.flush()


def main(argv: list[str]) -> int:
  parent_pid = int(argv[1])
  # Ctrl-C reaches the whole foreground process group; the parent decides
  # when this worker stops, so it does not print a KeyboardInterrupt.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  _limit_memory(int(argv[2]))
  threading.Thread(
      target=_exit_when_orphaned, args=(parent_pid,), daemon=True
  ).start()
  # math-verify warns on every call that its timeout is off; the parent owns it.
  logging.basicConfig(level=logging.ERROR)
  logging.getLogger("math_verify").setLevel(logging.ERROR)
  import math_verify  # pylint: disable=g-import-not-at-top

  _write({"ready": True})
  for line in sys.stdin:
    request = json.loads(line)
    try:
      gold = math_verify.parse(
          "\\boxed{" + request["gold"] + "}", parsing_timeout=None
      )
      answer = math_verify.parse(
          "\\boxed{" + request["answer"] + "}", parsing_timeout=None
      )
      equal = bool(gold) and bool(answer) and bool(
          math_verify.verify(gold, answer, timeout_seconds=None)
      )
      reply = {"id": request["id"], "equal": equal}
    except (Exception, MemoryError, RecursionError) as error:  # pylint: disable=broad-except
      reply = {"id": request["id"], "error": f"{type(error).__name__}: {error}"[:500]}
    _write(reply)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
