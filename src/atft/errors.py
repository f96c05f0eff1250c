"""Errors that the command line reports as one line (no traceback) with a non-zero exit."""


class InputError(ValueError):
    """Bad user input: a file, column or value that is not what was expected.

    The message must name the offending file/column/value and what was expected, in one line.
    """
