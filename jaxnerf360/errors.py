"""User-facing errors: one clear line, no traceback."""


class UserError(Exception):
    """A problem with the user's input (data, config, paths) that they can fix.

    The entry points catch it and print `error: <message>` on one line, then
    exit with status 2. The message names the file or value and says what to do.
    """


def first_line(error: Exception) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check(condition: bool, message: str) -> None:
    """Raises UserError(message) when condition is false."""
    if not condition:
        raise UserError(message)
