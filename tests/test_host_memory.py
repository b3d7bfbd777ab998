"""host_memory: a block XLA frees is mapped still when the next step allocates it again."""

import json
import os
import subprocess
import sys

import pytest

from jaxnerf360 import host_memory

# Allocates, touches and frees a 64 MiB block twice, as two steps' buffers would be, and
# prints the page faults of the second touch.
_PROBE = """
import ctypes, json, resource
from jaxnerf360 import host_memory
reused = host_memory.keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    libc.free(block)
print(json.dumps({"reused": reused, "faults": faults}))
"""


def _probe(system_malloc: str) -> dict:
    env = {host_memory.ENV: system_malloc}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True, env={**os.environ, **env})
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_second_allocation_finds_its_pages_mapped():
    pages = (64 << 20) // 4096
    kept = _probe("0")
    assert kept["reused"]
    assert kept["faults"][0] >= pages // 2  # a fresh block's pages fault when first touched
    assert kept["faults"][1] < pages // 20  # ... and are still mapped the second time
    system = _probe("1")  # the control: glibc's defaults unmap the block when it is freed
    assert not system["reused"]
    assert system["faults"][1] >= pages // 2
