"""Errors that the command line turns into `error: ...` and exit status 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input (file, row, column, model path, flag).

    The message must say what is wrong and where, in one line; the CLI prints it as
    `error: <message>` on stderr and exits with status 2, without a traceback, and the
    workspace is left as it was.
    """
