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


def writable_dir(path, flag: str):
    """Create directory `path` (and its parents) if needed and check it can be written to.

    A path that cannot be a writable directory (a file in the way, a read-only or missing
    mount, no permission) is a `UserError` naming `flag`, the option or argument that gave it.
    """
    import os
    from pathlib import Path

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        in_the_way = isinstance(exc, (FileExistsError, NotADirectoryError))
        reason = "a file is in the way" if in_the_way else (exc.strerror or str(exc)).lower()
        raise UserError(
            f"{flag} {path} cannot be created as a directory ({reason}); pass a directory you can write"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable by this user; pass a directory you can write")
    return path
