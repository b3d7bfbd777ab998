"""host_memory: `python -m jaxnerf360.<command>` restarts itself once with huge pages asked for."""

import json
import os
import subprocess
import sys

import pytest

from jaxnerf360 import host_memory

needs_huge_pages = pytest.mark.skipif(
    host_memory.huge_pages_env({}) is None,
    reason="glibc with transparent huge pages (madvise or always) only")


def _probe(**env) -> dict:
    """Runs the module's probe as a command: its tunables, faults and arguments."""
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host_memory.ENV)}
    out = subprocess.run([sys.executable, "-m", "jaxnerf360.host_memory", "--some", "arg"],
                         capture_output=True, text=True, check=True, env={**base, **env})
    return json.loads(out.stdout)


@needs_huge_pages
def test_command_restarts_with_huge_pages_and_its_arguments():
    probe = _probe()
    assert probe["tunables"] == host_memory.TUNABLE
    assert probe["argv"] == ["--some", "arg"]
    kept = _probe(GLIBC_TUNABLES="glibc.malloc.tcache_count=8")  # the user's own tunables stay
    assert kept["tunables"] == f"glibc.malloc.tcache_count=8:{host_memory.TUNABLE}"


@needs_huge_pages
def test_huge_pages_fault_once_per_2_mib():
    pages = (64 << 20) // 4096
    system = _probe(**{host_memory.ENV: "1"})  # opted out: started once, glibc's defaults
    assert system["tunables"] == ""
    with open(host_memory._THP, encoding="ascii") as f:
        if "[always]" in f.read():
            pytest.skip("the kernel gives huge pages to every process here")
    assert system["faults"] >= pages // 2  # a fresh block faults per 4 KiB page ...
    assert _probe()["faults"] < pages // 20  # ... and per 2 MiB page once asked for


def test_env_only_where_it_applies():
    env = host_memory.huge_pages_env({"GLIBC_TUNABLES": f"a=1:{host_memory.TUNABLE}"})
    assert env is None  # set already: no second restart
    assert host_memory.huge_pages_env({host_memory.ENV: "1"}) is None
