"""math-verify comparisons with a timeout that works from any thread.

math-verify 0.9.0 enforces its timeouts with `signal.alarm`, which only works
in the main thread, and a parse or comparison can run for minutes (for
example on `2^{2^{2^{2^{2^{2}}}}}`, whose value sympy tries to compute). So
the comparisons run in a persistent worker process with math-verify's own
timeouts off. The parent waits for each verdict at most `timeout_s`. A late
worker is killed, and a fresh one starts with the next request.
"""

from __future__ import annotations

import atexit
import collections
import enum
import json
import os
import pathlib
import select
import subprocess
import sys
import threading
import time

from absl import logging

_WORKER_SCRIPT = pathlib.Path(__file__).with_name("_math_verify_worker.py")
DEFAULT_MEMORY_BYTES = 4 * 1024**3
DEFAULT_STARTUP_TIMEOUT_S = 120.0
DEFAULT_CACHE_SIZE = 65536
# Requests are JSON lines; a reply longer than this is a broken worker.
_MAX_REPLY_BYTES = 1 << 20


class VerifyOutcome(enum.Enum):
  """Result of one math-verify comparison."""

  EQUAL = "equal"
  NOT_EQUAL = "not_equal"
  TIMEOUT = "timeout"
  ERROR = "error"


class WorkerError(RuntimeError):
  """The worker process could not be started or broke its protocol."""


class MathVerifier:
  """Compares a gold answer with a predicted one in a killable worker process.

  Thread-safe: requests from several threads are served one at a time.
  EQUAL and NOT_EQUAL verdicts are cached by `(gold, answer)`, because the
  N samples of a problem often repeat an answer; timeouts and errors are not.
  """

  def __init__(
      self,
      *,
      memory_bytes: int = DEFAULT_MEMORY_BYTES,
      startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
      cache_size: int = DEFAULT_CACHE_SIZE,
  ):
    """Set up a verifier; the worker starts on the first request.

    Args:
      memory_bytes: address-space limit of the worker (RLIMIT_AS); 0 for none.
      startup_timeout_s: seconds to wait for a new worker to import
        math-verify; not counted in a request's timeout.
      cache_size: the maximum number of cached verdicts; 0 turns the cache
        off.
    """
    self._memory_bytes = memory_bytes
    self._startup_timeout_s = startup_timeout_s
    self._lock = threading.Lock()
    self._process: subprocess.Popen[bytes] | None = None
    self._buffer = b""
    self._next_id = 0
    self._cache_size = cache_size
    self._cache: collections.OrderedDict[
        tuple[str, str], VerifyOutcome
    ] = collections.OrderedDict()
    self.num_requests = 0
    self.num_timeouts = 0
    self.num_starts = 0
    atexit.register(self.close)

  def verify(self, gold: str, answer: str, timeout_s: float) -> VerifyOutcome:
    """Compare `answer` with `gold` (both LaTeX or plain text answers).

    Returns TIMEOUT when the worker gives no verdict within `timeout_s`
    seconds; the worker is then killed.

    Raises:
      WorkerError: the worker could not be started.
    """
    if timeout_s <= 0:
      raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    with self._lock:
      key = (gold, answer)
      if key in self._cache:
        self._cache.move_to_end(key)
        return self._cache[key]
      outcome = self._request(gold, answer, timeout_s)
      if self._cache_size > 0 and outcome in (
          VerifyOutcome.EQUAL,
          VerifyOutcome.NOT_EQUAL,
      ):
        self._cache[key] = outcome
        if len(self._cache) > self._cache_size:
          self._cache.popitem(last=False)
      return outcome

  def _request(self, gold: str, answer: str, timeout_s: float) -> VerifyOutcome:
    """Send one comparison to the worker; the caller holds the lock."""
    self._ensure_started()
    self.num_requests += 1
    request_id = self._next_id
    self._next_id += 1
    request = {"id": request_id, "gold": gold, "answer": answer}

    try:
      self._process.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
      self._process.stdin.flush()
    except (BrokenPipeError, OSError) as error:
      logging.warning("math-verify worker died before a request: %s", error)
      self._kill()
      return VerifyOutcome.ERROR

    try:
      reply = self._read_line(deadline=time.monotonic() + timeout_s)
    except EOFError as error:
      logging.warning(
          "math-verify worker exited while comparing answer %.200r with "
          "gold %.200r (%s); the answer is graded incorrect",
          answer, gold, error,
      )
      self._kill()
      return VerifyOutcome.ERROR
    if reply is None:
      self.num_timeouts += 1
      logging.warning(
          "math-verify timed out after %gs comparing answer %.200r with "
          "gold %.200r; the answer is graded incorrect",
          timeout_s, answer, gold,
      )
      self._kill()
      return VerifyOutcome.TIMEOUT

    message = json.loads(reply)
    if message.get("id") != request_id:
      self._kill()
      raise WorkerError(f"math-verify worker replied out of order: {message}")
    if "error" in message:
      logging.warning(
          "math-verify failed comparing answer %.200r with gold %.200r: %s",
          answer, gold, message["error"],
      )
      return VerifyOutcome.ERROR
    return VerifyOutcome.EQUAL if message["equal"] else VerifyOutcome.NOT_EQUAL

  def close(self) -> None:
    """Stop the worker process, if one is running."""
    with self._lock:
      self._kill()

  def _ensure_started(self) -> None:
    if self._process is not None and self._process.poll() is None:
      return
    if self._process is not None:
      self._kill()
    self._process = subprocess.Popen(
        [
            sys.executable,
            "-P",
            str(_WORKER_SCRIPT),
            str(os.getpid()),
            str(self._memory_bytes),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
        close_fds=True,
    )
    self._buffer = b""
    self.num_starts += 1
    try:
      ready = self._read_line(
          deadline=time.monotonic() + self._startup_timeout_s
      )
    except EOFError:
      ready = None
    if ready is None or not json.loads(ready).get("ready"):
      self._kill()
      raise WorkerError(
          "math-verify worker did not start within "
          f"{self._startup_timeout_s:g}s; check that math-verify is installed "
          f"for {sys.executable} (its error output is above)"
      )

  def _read_line(self, deadline: float) -> bytes | None:
    """Return the worker's next output line, or None at the deadline.

    Raises:
      EOFError: the worker closed its output (it exited) or sent an
        over-long line.
    """
    stdout = self._process.stdout
    while b"\n" not in self._buffer:
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        return None
      readable, _, _ = select.select([stdout], [], [], remaining)
      if not readable:
        return None
      chunk = os.read(stdout.fileno(), 65536)
      if not chunk:
        raise EOFError(f"worker exit status {self._process.poll()}")
      self._buffer += chunk
      if len(self._buffer) > _MAX_REPLY_BYTES:
        raise EOFError(f"worker line longer than {_MAX_REPLY_BYTES} bytes")
    line, self._buffer = self._buffer.split(b"\n", 1)
    return line

  def _kill(self) -> None:
    if self._process is None:
      return
    process, self._process = self._process, None
    self._buffer = b""
    if process.poll() is None:
      process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
      if stream is not None:
        stream.close()


_shared_verifier: MathVerifier | None = None
_shared_lock = threading.Lock()


def shared_verifier() -> MathVerifier:
  """Return the process-wide verifier that tasks use by default."""
  global _shared_verifier
  with _shared_lock:
    if _shared_verifier is None:
      _shared_verifier = MathVerifier()
    return _shared_verifier
