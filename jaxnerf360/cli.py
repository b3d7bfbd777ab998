"""What every entry point shares: flag parsing, clean errors, process setup."""

import logging as logging_std
import sys

from absl import app, flags, logging

from jaxnerf360.errors import UserError

flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host TPU pods, SLURM).")


class _QuietLibraries(logging_std.Filter):
    """Drops info-level chatter of orbax/jax internals so progress lines stay readable."""

    def filter(self, record):
        if "/gin/resource_reader" in record.pathname:  # failed lookups while resolving includes
            return False
        noisy = "/orbax/" in record.pathname or "/jax/_src/" in record.pathname
        return record.levelno >= logging_std.WARNING or not noisy


def run(main) -> None:
    """Runs `main(argv)` under absl; a UserError becomes one line on stderr and exit 2."""

    def wrapped(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.get_absl_handler().addFilter(_QuietLibraries())
        try:
            if flags.FLAGS.distributed:
                import jax

                jax.distributed.initialize()
            return main(argv)
        except UserError as e:
            logging.flush()
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(wrapped)
