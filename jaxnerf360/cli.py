"""What every entry point shares: flag parsing, clean errors, process setup."""

import logging as logging_std
import sys

from absl import app, flags, logging

from jaxnerf360 import configs  # defines --gin_configs and --gin_bindings
from jaxnerf360.errors import UserError

flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host TPU pods, SLURM).")
flags.DEFINE_string("checkpoint_dir", None,
                    "A trained run's directory; its saved config.gin is used (no --gin_configs).")
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


def load_run(check_dirs: bool = True):
    """The Config named by --compressed, --checkpoint_dir, or --gin_configs/--gin_bindings."""
    FLAGS = flags.FLAGS
    return configs.load(FLAGS.gin_configs, FLAGS.gin_bindings, FLAGS.checkpoint_dir,
                        FLAGS.compressed, check_dirs=check_dirs)
