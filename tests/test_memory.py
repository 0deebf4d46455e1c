"""The C allocator keeps a training step's freed buffers for reuse (marlkd.memory)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from marlkd import memory
from marlkd.threads import apply_threads

# Allocates, writes and frees a 64 MiB block (above glibc's largest mmap threshold, 32 MiB) five times
# through the C allocator, and prints the page faults of the last four rounds.
PROGRAM = textwrap.dedent(
    """
    import ctypes, resource
    from marlkd.memory import retain_freed_memory
    print(retain_freed_memory())
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 64 << 20
    def use_and_free():
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    use_and_free()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        use_and_free()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def run_program(**env: str) -> tuple[str, int]:
    src = os.path.join(os.path.dirname(__file__), os.pardir, "src")
    environ = {**os.environ, "PYTHONPATH": src, **env}
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=environ, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    applied, faults = run_program(MARLKD_MALLOC="")
    assert applied == "True"
    assert faults < 500  # the block's pages are reused: not 4 x 16,384 faults
    applied, faults = run_program(MARLKD_MALLOC="glibc")
    assert applied == "False"
    assert faults >= 4 * 16_000  # glibc maps and unmaps the block each round: every page faults anew


def test_entry_points_retain_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr("marlkd.threads.retain_freed_memory", lambda: calls.append(1) or True)
    apply_threads()
    assert calls == [1]


def test_glibc_policy_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_applied", False)
    monkeypatch.setenv(memory.MALLOC_ENV, "glibc")
    assert memory.retain_freed_memory() is False
