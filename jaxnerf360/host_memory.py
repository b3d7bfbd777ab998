"""Host memory: a step's buffers on huge pages, so that reusing them does not fault 4 KiB at a time.

XLA:CPU allocates a step's buffers with the C library's malloc and frees them when the step
ends. Blocks over 64 MiB, and the arenas of its worker threads once empty, go back to the
kernel at once, so the next step touches fresh pages: each 4 KiB page is a fault. On a
2-core CPU that was a third of the VM config's step (BENCHMARKS.md, "Host memory").
glibc's `glibc.malloc.hugetlb=1` asks for transparent huge pages on the blocks it maps:
one fault per 2 MiB. glibc reads its tunables only when a process starts, so the command
line entry points start themselves once more with it set.

(Keeping the freed blocks instead, with one malloc arena for all threads, removed the faults
too, but made each compilation a third slower and the MLP config's step a quarter slower:
its threads then wait on each other's allocations.)
"""

import os
import platform
import sys

ENV = "JAXNERF360_SYSTEM_MALLOC"  # set to 1 to leave the C library's allocator as it is
TUNABLE = "glibc.malloc.hugetlb=1"
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_available() -> bool:
    """Whether the kernel gives transparent huge pages to a process that asks for them."""
    try:
        with open(_THP, encoding="ascii") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def huge_pages_env(env=None):
    """`env` (os.environ) with glibc's huge-page tunable added, or None where it does not
    apply: not glibc, no transparent huge pages, opted out, or set already."""
    env = os.environ if env is None else env
    tunables = env.get("GLIBC_TUNABLES", "")
    if (env.get(ENV, "") not in ("", "0") or "glibc.malloc.hugetlb" in tunables
            or platform.libc_ver()[0] != "glibc" or not huge_pages_available()):
        return None
    return {**env, "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE}


def restart_with_huge_pages(argv=None) -> None:
    """Replaces this process by the same command (`argv`, sys.orig_argv) with the huge-page
    tunable set; returns where it does not apply (see `huge_pages_env`)."""
    env = huge_pages_env()
    if env is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, list(argv or sys.orig_argv), env)
    except OSError:
        pass  # the same run, without huge pages: slower on a CPU, not wrong


def started_as_command() -> bool:
    """Whether this process runs `python -m jaxnerf360.<command>` (checked while the package
    is being imported, before the command's own imports)."""
    argv = sys.orig_argv
    if sys.argv[:1] != ["-m"] or "-m" not in argv[:-1]:
        return False
    return argv[argv.index("-m") + 1].startswith("jaxnerf360.")


if __name__ == "__main__":
    # A probe for the tests: the tunables this process started with, and the page faults of
    # touching a freshly mapped 64 MiB block.
    import ctypes
    import json
    import resource

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"tunables": os.environ.get("GLIBC_TUNABLES", ""), "faults": faults,
                      "argv": sys.argv[1:]}))
