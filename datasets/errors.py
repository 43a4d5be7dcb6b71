"""The one exception the data readers raise, so that ``datasets/`` needs nothing from the
training package."""


class DataError(ValueError):
    """A problem with the user's data files (missing, misplaced, unreadable, mislabelled) that
    the user fixes.

    The CLI prints its message as one line and exits with code 2, without a traceback, so the
    message names the file or folder, the problem and the fix.
    """
