"""Runs one command as N JAX processes on this machine, joined over loopback: what a
multi-host job does, without the hosts.

    python scripts/launch_local.py --processes=2 --devices_per_process=2 -- \
        python -m jaxnerf360.train --gin_configs=configs/debug.gin --distributed

Each process gets `--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=i`
after the command, `devices_per_process` simulated CPU devices, and its own log file
(`--log_dir`, default a temporary folder). Exits with the first non-zero exit code, or 0.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list, processes: int, devices_per_process: int, log_dir: str,
          env: dict | None = None) -> list:
    """[(Popen, log path)] of the N processes of `command`, started now."""
    port = free_port()
    env = dict(os.environ if env is None else env)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                        f"{devices_per_process}").strip()
    env.setdefault("JAX_PLATFORMS", "cpu")
    os.makedirs(log_dir, exist_ok=True)
    procs = []
    for i in range(processes):
        path = os.path.join(log_dir, f"process_{i}.log")
        args = [*command, f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={processes}", f"--process_id={i}"]
        with open(path, "w", encoding="utf-8") as log:
            procs.append((subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env),
                          path))
    return procs


def wait(procs: list, timeout: float) -> list:
    """The exit codes of `procs`; the ones still running after `timeout` seconds are killed
    (exit code None)."""
    deadline = time.monotonic() + timeout
    codes = []
    for proc, _ in procs:
        try:
            codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            codes.append(None)
    return codes


def main() -> None:
    """Command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=1)
    parser.add_argument("--log_dir", default=None, help="one log file per process")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a kill")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.processes < 1 or args.devices_per_process < 1:
        parser.error("give --processes and --devices_per_process >= 1, then -- COMMAND")
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="launch_local_")
    procs = start(command, args.processes, args.devices_per_process, log_dir)
    codes = wait(procs, args.timeout)
    for i, ((_, path), code) in enumerate(zip(procs, codes, strict=True)):
        print(f"process {i}: exit {'killed (timeout)' if code is None else code}, log {path}")
    sys.exit(next((1 if c is None else c for c in codes if c != 0), 0))


if __name__ == "__main__":
    main()
