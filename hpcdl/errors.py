"""The one error type users see: a single line naming what is wrong."""


class HpcdlError(Exception):
    """A user-facing error; the CLI prints it as one line on stderr and exits non-zero."""
