"""Errors about the user's input (paths, files, config values), as opposed to bugs.

The entry point prints these as one clear message, without a traceback; each says which file or
config field is wrong and how to fix it.
"""

from __future__ import annotations

WORKER_PREFIX = "Caught "  # how torch re-raises a DataLoader worker's exception (torch._utils.ExceptionWrapper)


class InputError(Exception):
    """Base of the errors the command line reports as a message.

    A DataLoader worker's exception reaches the main process re-created from one string: "Caught X
    in DataLoader worker process N. Original Traceback ...", the worker's whole traceback. An
    InputError so re-created keeps only its own message (the traceback's last entry), so a bad
    file met by a worker is still reported in one line naming it.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith(WORKER_PREFIX):
            self.args = (worker_message(args[0], type(self)),)

    def __str__(self) -> str:  # OSError subclasses would otherwise format their own way
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


def worker_message(text: str, cls: type) -> str:
    """The original message of ``cls`` inside a re-raised worker traceback (``text`` itself if it is not one)."""
    if "\nOriginal Traceback" not in text:
        return text
    name = cls.__qualname__ if cls.__module__ in ("builtins", "__main__") else f"{cls.__module__}.{cls.__qualname__}"
    start = text.rfind(f"\n{name}: ")
    return text[start + len(name) + 3 :].strip() if start >= 0 else text


class MissingInput(InputError, FileNotFoundError):
    """A file named in the config does not exist."""


class MissingDependency(InputError, ImportError):
    """A setting needs an optional package that is not installed; the message names the pip command."""


def input_error_in(err: BaseException) -> InputError | None:
    """The InputError behind ``err``, also when Hydra's ``instantiate`` wrapped it."""
    while err is not None:
        if isinstance(err, InputError):
            return err
        err = err.__cause__ or err.__context__
    return None
