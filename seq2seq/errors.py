"""The one exception type for mistakes a user can fix (bad config, bad file, bad argument).

The CLI prints ``error: <message>`` for it and exits with status 2, without a traceback;
any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A one-line, actionable message naming the file/line/key at fault and what was expected."""
