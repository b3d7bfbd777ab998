"""What every entry point shares: flag parsing, clean errors, process setup."""

import errno
import logging as logging_std
import os
import sys

from absl import app, flags, logging

from jaxnerf360 import configs  # defines --gin_configs and --gin_bindings
from jaxnerf360.errors import UserError

flags.DEFINE_bool("distributed", False,
                  "Join the other processes of a multi-host job first (jax.distributed). "
                  "On TPU pods and SLURM the job's environment says where the coordinator "
                  "is; elsewhere give the three flags below (or JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0's coordinator (with --distributed).")
flags.DEFINE_integer("num_processes", None, "Processes in the job (with --distributed).")
flags.DEFINE_integer("process_id", None, "This process's index, 0 to N-1 (with --distributed).")
flags.DEFINE_integer("distributed_timeout", 300,
                     "Seconds to wait for every process to join, and for a silent process "
                     "before the others stop (with --distributed).")
flags.DEFINE_string("checkpoint_dir", None,
                    "A trained run's directory; its saved config.gin is used (no --gin_configs).")
flags.DEFINE_string("compilation_cache", os.path.join("~", ".cache", "jaxnerf360", "xla"),
                    "JAX's persistent compilation cache: a second run of the same config loads "
                    "its compiled steps from here instead of compiling them ('' turns it off).")
flags.DEFINE_string("compressed", None,
                    "A compressed scene file (python -m jaxnerf360.compress) to use instead of a "
                    "run's checkpoint; outputs go beside it (the path without its extension).")


class _QuietLibraries(logging_std.Filter):
    """Drops info-level chatter of orbax/jax internals so progress lines stay readable."""

    def filter(self, record):
        if "/gin/resource_reader" in record.pathname:  # failed lookups while resolving includes
            return False
        noisy = "/orbax/" in record.pathname or "/jax/_src/" in record.pathname
        return record.levelno >= logging_std.WARNING or not noisy


def run(main, commands: tuple = ()) -> None:
    """Runs `main(argv)` under absl; a UserError becomes one line on stderr and exit 2.

    With `commands`, exactly one of them must come first on the command line (a subcommand).
    """

    def wrapped(argv):
        if commands and (len(argv) != 2 or argv[1] not in commands):
            raise app.UsageError(f"give one of {', '.join(commands)} first, e.g. python -m "
                                 f"{os.path.basename(argv[0])} {commands[0]} --checkpoint_dir=RUN")
        if not commands and len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.get_absl_handler().addFilter(_QuietLibraries())
        enable_compilation_cache(flags.FLAGS.compilation_cache)
        try:
            if flags.FLAGS.distributed:
                initialize_distributed()
            return main(argv)
        except UserError as e:
            logging.flush()
            # gin appends "In call to configurable ..." lines to errors raised in a
            # configurable; the message itself is the first line.
            print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:
            if not _is_user_path(e.filename):
                raise  # an internal error, a bug to report: keep its traceback
            logging.flush()
            print(f"error: {describe_os_error(e)}", file=sys.stderr)
            sys.exit(2)

    app.run(wrapped)


def initialize_distributed() -> None:
    """Joins the job's processes (jax.distributed), or one clear line when the coordinator
    cannot be reached in time. Only process 0 logs below warnings."""
    import jax

    FLAGS = flags.FLAGS
    timeout = FLAGS.distributed_timeout
    address = FLAGS.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address and FLAGS.process_id:  # JAX aborts the process when it cannot connect
        wait_for_coordinator(address, timeout)
    try:
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                   FLAGS.process_id, initialization_timeout=timeout,
                                   heartbeat_timeout_seconds=timeout)
    except (RuntimeError, ValueError) as e:  # XlaRuntimeError is a RuntimeError
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"--distributed: could not join the job's coordinator at "
                        f"{address or 'the address the environment gives'} within {timeout} s "
                        f"({first}); start every process, and check --coordinator_address, "
                        "--num_processes and --process_id") from None
    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)


def wait_for_coordinator(address: str, timeout: float) -> None:
    """Returns once something listens at `address` (host:port); one clear line after
    `timeout` seconds of nothing."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--coordinator_address={address!r} must be host:port")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise UserError(f"--distributed: nothing answers at {address} after {timeout} s; "
                                "start process 0 (the coordinator) too, or check "
                                "--coordinator_address") from None
            time.sleep(0.5)


def enable_compilation_cache(path: str, min_compile_seconds: float = 1.0) -> None:
    """Keeps every compilation that took at least `min_compile_seconds` in `path` (JAX's
    persistent cache), so later processes load it; nothing for an empty path, and one warning
    line for a folder that cannot be made."""
    if not path:
        return
    path = os.path.expanduser(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:  # not worth stopping a run for: it only compiles as before
        logging.warning("compilation cache off: %s", describe_os_error(e))
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)


_OPERATIONS = {FileNotFoundError: "find", PermissionError: "access", IsADirectoryError:
               "use as a file", NotADirectoryError: "use as a folder", FileExistsError:
               "create"}


def describe_os_error(error: OSError) -> str:
    """One line for a file-system error on a path the user gave: the operation and the path."""
    operation = _OPERATIONS.get(type(error), "read or write")
    if error.errno == errno.ENOSPC:
        operation = "write"
    target = f"{error.filename} -> {error.filename2}" if error.filename2 else error.filename
    return (f"cannot {operation} {target}: {error.strerror or type(error).__name__}; check the "
            "path and its permissions")


def _is_user_path(path) -> bool:
    """Whether an OSError's path is the user's (not inside the installed code or Python): the
    line between a bad input (one line) and an internal error (a traceback)."""
    if path is None:
        return False
    full = os.path.realpath(os.fspath(path))
    code = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix,
                                          os.path.dirname(os.path.abspath(__file__)))]
    return not any(full == c or full.startswith(c + os.sep) for c in code)


def load_run(check_dirs: bool = True):
    """The Config named by --compressed, --checkpoint_dir, or --gin_configs/--gin_bindings."""
    FLAGS = flags.FLAGS
    return configs.load(FLAGS.gin_configs, FLAGS.gin_bindings, FLAGS.checkpoint_dir,
                        FLAGS.compressed, check_dirs=check_dirs)
