"""What every entry point shares: flag parsing, clean errors, process setup."""

import sys

from absl import app, flags, logging

from jaxnerf360.errors import UserError

flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host TPU pods, SLURM).")


def run(main) -> None:
    """Runs `main(argv)` under absl; a UserError becomes one line on stderr and exit 2."""

    def wrapped(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
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
