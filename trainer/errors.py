"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A problem with the user's config, data or files.

    The CLI prints its message as one line and exits with code 2, without a traceback.
    The message names the problem and the fix.
    """


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite: the run stops (a checkpoint of the last good state is
    written first), and the message names the step and the usual causes."""
