"""The one exception type for mistakes a user can fix (bad config, bad file, bad argument).

The CLI prints ``error: <message>`` for it and exits with status 2, without a traceback;
any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A one-line, actionable message naming the file/line/key at fault and what was expected."""


class DistributedError(UserError):
    """One process of a multi-process job lost the others (one died or cannot be reached).
    Every process prints it, not only rank 0: it tells what this process saw."""


def require_text_list(texts: object, what: str) -> None:
    """A plain string is a sequence of characters: passed where a list of texts belongs, it
    would be read as one text per character. Raise TypeError instead of doing that."""
    if isinstance(texts, str):
        raise TypeError(f"{what} takes a list of texts, got one str: wrap it, [text]")
