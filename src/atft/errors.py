"""Errors that the command line reports as one line (no traceback) with a non-zero exit."""


class InputError(ValueError):
    """Bad user input: a file, column or value that is not what was expected.

    The message must name the offending file/column/value and what was expected, in one line.
    """


class RunError(RuntimeError):
    """A run that cannot go on (e.g. only non-finite steps, a lost distributed worker).

    The command line prints the one-line message and exits 1; what the run kept (its last checkpoint)
    is named in the message.
    """
