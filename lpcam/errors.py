"""Errors about the user's input (paths, files, config values), as opposed to bugs.

The entry point prints these as one clear message, without a traceback; each says which file or
config field is wrong and how to fix it.
"""


class InputError(Exception):
    """Base of the errors the command line reports as a message."""


class MissingInput(InputError, FileNotFoundError):
    """A file named in the config does not exist."""


def input_error_in(err: BaseException) -> InputError | None:
    """The InputError behind ``err``, also when Hydra's ``instantiate`` wrapped it."""
    while err is not None:
        if isinstance(err, InputError):
            return err
        err = err.__cause__ or err.__context__
    return None
