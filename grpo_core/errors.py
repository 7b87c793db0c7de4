"""User-facing errors.

A `UserError` is something the user can fix (a bad path, a bad value). The CLI
prints its message as one sentence and exits with `exit_code` (2 by default),
without a traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error the user caused and can fix; the message names the field/file and the fix."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
