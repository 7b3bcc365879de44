"""The one base class of errors that are about the user's input, not about the code.

A params file, a table between stages, a checkpoint or a dataset index that cannot be
used raises a subclass of :class:`InputError` whose message names the file and says what
is wrong. Entry points (the stages, the CLI) print that message as one line and exit
non-zero; a traceback would add nothing for a bad file, so it is shown only when asked for.
"""

from __future__ import annotations

# Exit status of an entry point stopped by Ctrl-C: 128 + SIGINT, what a shell reports.
EXIT_INTERRUPTED = 130


class InputError(ValueError):
    """Bad user input (params, a table, a checkpoint, a dataset index); the message names the file."""
