"""Tests for the sandbox that runs untrusted Python programs."""

import os
import socket
import threading

import pytest

from ec_jax.tasks import sandbox

# Small limits keep the timeout cases short.
LIMITS = sandbox.SandboxLimits(timeout_s=2.0, memory_bytes=512 * 1024**2)


def test_program_that_returns_passes():
  result = sandbox.run_python("import math\nassert math.isqrt(16) == 4\n", LIMITS)
  assert result.passed
  assert result.status == "passed"
  assert result.returncode == 0


def test_failing_assertion_fails():
  result = sandbox.run_python("assert 1 + 1 == 3\n", LIMITS)
  assert not result.passed
  assert result.status == "failed"
  assert "AssertionError" in result.stderr


def test_syntax_error_fails():
  result = sandbox.run_python("def broken(:\n", LIMITS)
  assert not result.passed
  assert "SyntaxError" in result.stderr


def test_infinite_loop_times_out():
  limits = sandbox.SandboxLimits(timeout_s=1.0)
  result = sandbox.run_python("while True:\n  pass\n", limits)
  assert not result.passed
  assert result.status == "timed_out"
  assert result.returncode is not None and result.returncode < 0


def test_sleep_is_killed_at_wall_clock_timeout():
  limits = sandbox.SandboxLimits(timeout_s=1.0)
  result = sandbox.run_python("import time\ntime.sleep(60)\n", limits)
  assert result.status == "timed_out"


def test_huge_allocation_fails():
  result = sandbox.run_python("data = bytearray(64 * 1024**3)\n", LIMITS)
  assert not result.passed
  assert "MemoryError" in result.stderr


@pytest.mark.parametrize(
    "exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"]
)
def test_exit_before_end_fails(exit_call):
  result = sandbox.run_python(f"{exit_call}\nassert False\n", LIMITS)
  assert not result.passed
  assert result.status == "failed"
  assert result.returncode == 0


def test_printed_success_message_is_not_trusted():
  program = (
      "import sys\n"
      "print('All tests passed!')\n"
      "sys.stdout.flush()\n"
      "raise AssertionError('wrong answer')\n"
  )
  result = sandbox.run_python(program, LIMITS)
  assert not result.passed
  assert "All tests passed!" in result.stdout


def test_huge_output_is_capped():
  limits = sandbox.SandboxLimits(
      timeout_s=5.0, file_size_bytes=1024**2, max_output_bytes=1000
  )
  result = sandbox.run_python(
      "import sys\nwhile True:\n  sys.stdout.write('x' * 65536)\n", limits
  )
  assert not result.passed
  assert len(result.stdout) == 1000


def test_lone_surrogate_in_source_fails_cleanly():
  result = sandbox.run_python("text = '\ud800'\nassert False\n", LIMITS)
  assert not result.passed
  assert "AssertionError" in result.stderr


def test_stdin_is_empty():
  result = sandbox.run_python("value = input()\n", LIMITS)
  assert not result.passed
  assert "EOFError" in result.stderr


def test_writing_to_result_pipe_is_not_success():
  # The program can read the result descriptor from argv, but not the token.
  program = (
      "import os, sys\n"
      "os.write(int(sys.argv[2]), b'0' * 32)\n"
      "os._exit(0)\n"
  )
  result = sandbox.run_python(program, LIMITS)
  assert not result.passed


def test_environment_is_minimal():
  program = (
      "import os\n"
      "assert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL'}, "
      "sorted(os.environ)\n"
      "assert os.getcwd() == os.environ['HOME']\n"
  )
  os.environ["EC_JAX_SANDBOX_TEST_SECRET"] = "visible only to the parent"
  try:
    result = sandbox.run_python(program, LIMITS)
  finally:
    del os.environ["EC_JAX_SANDBOX_TEST_SECRET"]
  assert result.passed, result.stderr


def test_fork_is_refused_or_reaped():
  # Root ignores RLIMIT_NPROC, so there the forked child is killed with the
  # process group; elsewhere fork fails. The caller survives either way.
  program = (
      "import os, time\n"
      "try:\n"
      "  pid = os.fork()\n"
      "except OSError:\n"
      "  pid = -1\n"
      "if pid == 0:\n"
      "  time.sleep(600)\n"
  )
  result = sandbox.run_python(program, LIMITS)
  assert result.passed, result.stderr


def test_network_is_unreachable_when_isolated():
  if not sandbox.network_isolation_prefix():
    pytest.skip("this OS does not permit unshare --net")
  server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  server.bind(("127.0.0.1", 0))
  server.listen(1)
  port = server.getsockname()[1]
  try:
    program = (
        "import socket\n"
        f"socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
    )
    result = sandbox.run_python(program, LIMITS)
  finally:
    server.close()
  assert result.network_isolated
  assert not result.passed
  assert "Error" in result.stderr


def test_runs_from_threads():
  results = [None] * 4

  def run(index):
    results[index] = sandbox.run_python(f"assert {index} + 1 == {index + 1}\n", LIMITS)

  threads = [threading.Thread(target=run, args=(index,)) for index in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert all(result.passed for result in results)


@pytest.mark.parametrize(
    "field, value", [("timeout_s", 0), ("memory_bytes", 0), ("cpu_time_s", 0)]
)
def test_limits_reject_invalid(field, value):
  with pytest.raises(ValueError, match=field):
    sandbox.SandboxLimits(**{field: value})
