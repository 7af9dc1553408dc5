"""Errors the engine reports to people: one line that names the file and the problem."""


class InputError(ValueError):
    """Bad particle input: missing file, not an MRC, truncated data, mismatched boxes..."""


class JobCancelled(Exception):
    """Raised by a progress callback to stop a run between batches."""


class CommandError(Exception):
    """A command-line error the CLI reports as one line and a non-zero exit."""
