"""Host memory: keep what XLA:CPU frees for its next step instead of handing it back.

XLA:CPU allocates a step's buffers with the C library's malloc and frees them when the step
ends. glibc returns large blocks to the kernel at once (mmap'd blocks, and the tops of the
per-thread arenas beyond the trim threshold), so the next step touches fresh pages: each
4 KiB page is a fault, zeroed by the kernel. On a 2-core CPU that was a third of the VM
config's training time (BENCHMARKS.md, "Host memory"). One arena, served from the heap and
never trimmed, keeps the pages mapped from one step to the next; the price is that the
process's resident memory stays at its peak.
"""

import ctypes
import ctypes.util
import os
import platform

ENV = "JAXNERF360_SYSTEM_MALLOC"  # set to 1 to leave the C library's allocator as it is

# mallopt's parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_SETTINGS = (
    (_M_ARENA_MAX, 1),  # threads share the main arena: a block freed by one is reused by all
    (_M_MMAP_THRESHOLD, 1 << 30),  # blocks up to 1 GiB come from the heap, not their own mmap
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # the heap's free top is kept, not returned to the kernel
)


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to reuse freed memory; False where it is not glibc or `ENV` is set.

    Call it before JAX starts its threads (a thread that has allocated keeps its arena):
    the command-line entry points do, first thing; a notebook can, before its first JAX call.
    """
    if os.environ.get(ENV, "") not in ("", "0") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS)
    except (OSError, AttributeError):
        return False
