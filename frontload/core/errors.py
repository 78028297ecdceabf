"""The one exception type users see: its message names the file, line, table or field at fault.

The command line prints a ``FrontloadError`` as a one-line message and exits with status 2; any
other exception is a bug and keeps its traceback.
"""


class FrontloadError(Exception):
    """Bad input or a failed check, reported to the user without a traceback."""
