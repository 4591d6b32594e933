"""The error type for bad input: the CLI prints its message and exits non-zero."""


class InputError(ValueError):
    """Bad user input (file, line, field or value); the message names where and what."""
