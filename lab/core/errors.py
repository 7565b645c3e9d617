"""The errors a user's request can cause, and the one way they become a message.

    python -c "from lab.core.errors import user_message; print(user_message(KeyError('no adapter x')))"

Everything in USER_ERRORS is the user's to fix (a bad value, a missing file, a model that does
not fit): the CLI prints it as `error: ...` and exits with 2, a tab shows it in a gr.Error, and
the app keeps serving. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class DataDirError(RuntimeError):
    """The data directory cannot be created or written."""


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message says what to do instead."""


class MemoryBudgetError(RuntimeError):
    """What was asked for cannot fit even after evicting everything unpinned."""


class EndpointError(RuntimeError):
    """A remote model server (LAB_ENDPOINTS) could not be reached, timed out or refused a request; the
    message names the endpoint, what happened and what to do."""


class RequestCancelled(RuntimeError):
    """A model request stopped because its page went away, its user pressed Cancel or an admin cancelled it."""


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, PermissionError, ModelLoadError, DataDirError,
                                                MemoryBudgetError, EndpointError, RequestCancelled)
"""Errors caused by what the user asked for: shown as a message, never a crash."""


def user_message(exc: BaseException) -> str:
    """The message a person reads: a KeyError's own text without the quotes str() would add."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
