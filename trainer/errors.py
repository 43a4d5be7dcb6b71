"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A problem with the user's config, data or files.

    The CLI prints its message as one line and exits with code 2, without a traceback.
    The message names the problem and the fix.
    """
