"""The one error type the command line prints as a single line (no traceback)."""


class UserError(Exception):
    """Bad input or a missing prerequisite: the message names the problem and the fix."""
