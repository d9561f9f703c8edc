"""Execution of untrusted Python programs in a limited child process.

Each program runs in a fresh interpreter (`python -I`, started with
`subprocess.Popen`, never forked from the caller) in its own session and
temporary working directory, with an almost empty environment. The child sets
these limits before the program starts: CPU time, address space, file size,
number of processes and open files. The wall-clock timeout kills
the whole process group. Where the OS permits it (`unshare --net`, as root or
through a user namespace) the child has no network; `ExecutionResult` records
whether it had none.

A program passes only when the trusted harness (`_sandbox_harness.py`) writes
a random per-run token to a pipe after the program returned. Printed text and
the exit status are never trusted. `run_python` is thread-safe: it uses no
`preexec_fn`, so several programs can run from a thread pool.

NOTE: this is protection against wrong, hanging or resource-hungry code, not
a security boundary against hostile code. As root the process-count limit is
not enforced and the file system is writable as root.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
import math
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import logging

_HARNESS = pathlib.Path(__file__).with_name("_sandbox_harness.py")
_SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
  """Resource limits of one sandboxed run.

  Attributes:
    timeout_s: wall-clock seconds before the process group is killed.
    cpu_time_s: CPU seconds (RLIMIT_CPU); None for `ceil(timeout_s) + 1`.
    memory_bytes: address space (RLIMIT_AS).
    file_size_bytes: largest file the program may write (RLIMIT_FSIZE);
      also caps its stdout and stderr, which go to files.
    max_processes: RLIMIT_NPROC, counted over all processes of the user, so 1
      forbids forking for a user that already runs a process. Root ignores it.
    max_open_files: RLIMIT_NOFILE.
    max_output_bytes: how much of stdout and of stderr the parent reads back.
    isolate_network: run in a new network namespace when the OS permits it.
  """

  timeout_s: float = 10.0
  cpu_time_s: int | None = None
  memory_bytes: int = 2 * 1024**3
  file_size_bytes: int = 16 * 1024**2
  max_processes: int = 1
  max_open_files: int = 64
  max_output_bytes: int = 64 * 1024
  isolate_network: bool = True

  def __post_init__(self):
    if not self.timeout_s > 0:
      raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
    for name in (
        "memory_bytes",
        "file_size_bytes",
        "max_processes",
        "max_open_files",
        "max_output_bytes",
    ):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
    if self.cpu_time_s is not None and self.cpu_time_s < 1:
      raise ValueError(f"cpu_time_s must be at least 1, got {self.cpu_time_s}")

  def rlimits(self) -> dict[str, int]:
    """Return the limits by `resource` constant name, as the harness sets them."""
    cpu_time_s = self.cpu_time_s or math.ceil(self.timeout_s) + 1
    return {
        "RLIMIT_CPU": cpu_time_s,
        "RLIMIT_AS": self.memory_bytes,
        "RLIMIT_FSIZE": self.file_size_bytes,
        "RLIMIT_NPROC": self.max_processes,
        "RLIMIT_NOFILE": self.max_open_files,
        "RLIMIT_CORE": 0,
    }


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
  """Outcome of one sandboxed run.

  Attributes:
    passed: the program returned normally (the harness wrote the token).
    status: `passed`, `failed` (raised, exited or was killed by a limit) or
      `timed_out` (killed at the wall-clock timeout).
    returncode: the child's exit status; negative for a signal.
    stdout: the first `max_output_bytes` of the program's stdout.
    stderr: the first `max_output_bytes` of its stderr (tracebacks).
    network_isolated: whether the child ran without network.
    elapsed_s: wall-clock seconds from start to exit or kill.
  """

  passed: bool
  status: str
  returncode: int | None
  stdout: str
  stderr: str
  network_isolated: bool
  elapsed_s: float


@functools.lru_cache(maxsize=None)
def network_isolation_prefix() -> tuple[str, ...]:
  """Return the command prefix that runs a program without network, or ().

  Tries `unshare --net` (needs root) and then `unshare --user
  --map-root-user --net` (needs unprivileged user namespaces), and keeps
  the first that runs a trivial Python program.
  """
  unshare = shutil.which("unshare")
  if unshare is None:
    logging.warning(
        "unshare not found: sandboxed programs keep network access"
    )
    return ()
  candidates = [(unshare, "--user", "--map-root-user", "--net", "--")]
  if os.geteuid() == 0:
    candidates.insert(0, (unshare, "--net", "--"))
  for prefix in candidates:
    try:
      probe = subprocess.run(
          [*prefix, sys.executable, "-I", "-c", "pass"],
          stdin=subprocess.DEVNULL,
          stdout=subprocess.DEVNULL,
          stderr=subprocess.PIPE,
          timeout=30,
          check=False,
      )
    except (OSError, subprocess.TimeoutExpired) as error:
      logging.info("network isolation %s unavailable: %s", prefix, error)
      continue
    if probe.returncode == 0:
      return prefix
    logging.info(
        "network isolation %s unavailable: %s",
        prefix, probe.stderr.decode("utf-8", "replace").strip(),
    )
  logging.warning(
      "unshare is not permitted here (no root, no user namespaces): "
      "sandboxed programs keep network access"
  )
  return ()


def _kill_group(pgid: int) -> None:
  try:
    os.killpg(pgid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def _read_pipe(fd: int, max_bytes: int) -> bytes:
  """Read what is buffered in a pipe, at most `max_bytes`, without blocking."""
  os.set_blocking(fd, False)
  data = b""
  while len(data) < max_bytes:
    try:
      chunk = os.read(fd, max_bytes - len(data))
    except BlockingIOError:
      break
    if not chunk:
      break
    data += chunk
  return data


def _read_head(path: pathlib.Path, max_bytes: int) -> str:
  with open(path, "rb") as stream:
    return stream.read(max_bytes).decode("utf-8", "replace")


def run_python(
    source: str, limits: SandboxLimits = SandboxLimits()
) -> ExecutionResult:
  """Run a Python program in the sandbox and report whether it returned normally.

  Args:
    source: the program text. For a test it ends with the call that runs the
      tests, so returning normally means the tests passed. It runs with
      `__name__` set to `"__candidate__"`, so `if __name__ == "__main__":`
      blocks are skipped.
    limits: resource limits and the timeout.

  Returns:
    The outcome. Exceptions, `sys.exit` (any code), `os._exit`, signals,
    exhausted limits and the timeout all give `passed=False`.
  """
  prefix = network_isolation_prefix() if limits.isolate_network else ()
  token = secrets.token_hex(16)
  with tempfile.TemporaryDirectory(prefix="ec_jax_sandbox_") as workdir:
    workdir_path = pathlib.Path(workdir)
    program_path = workdir_path / "program.py"
    # Decoded model output can hold lone surrogates, which UTF-8 cannot encode.
    program_path.write_text(source, encoding="utf-8", errors="replace")
    stdout_path = workdir_path / "stdout.txt"
    stderr_path = workdir_path / "stderr.txt"
    env = {
        "PATH": _SEARCH_PATH,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    read_fd, write_fd = os.pipe()
    try:
      with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        start = time.monotonic()
        process = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-I",
                str(_HARNESS),
                str(program_path),
                str(write_fd),
            ],
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=stderr,
            cwd=workdir,
            env=env,
            close_fds=True,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
      os.close(write_fd)
      write_fd = -1
      header = {"token": token, "limits": limits.rlimits()}
      try:
        process.stdin.write((json.dumps(header) + "\n").encode("ascii"))
        process.stdin.close()
      except (BrokenPipeError, OSError):
        pass  # The child died at start-up; its exit status is reported below.
      try:
        returncode = process.wait(timeout=limits.timeout_s)
        timed_out = False
      except subprocess.TimeoutExpired:
        timed_out = True
      # Kill the group in both cases: the program may have left children.
      _kill_group(process.pid)
      if timed_out:
        returncode = process.wait()
      elapsed_s = time.monotonic() - start
      result = _read_pipe(read_fd, len(token) + 1)
    finally:
      os.close(read_fd)
      if write_fd >= 0:
        os.close(write_fd)
    passed = hmac.compare_digest(result, token.encode("ascii"))
    if passed:
      status = "passed"
    elif timed_out:
      status = "timed_out"
    else:
      status = "failed"
    return ExecutionResult(
        passed=passed,
        status=status,
        returncode=returncode,
        stdout=_read_head(stdout_path, limits.max_output_bytes),
        stderr=_read_head(stderr_path, limits.max_output_bytes),
        network_isolated=bool(prefix),
        elapsed_s=elapsed_s,
    )
