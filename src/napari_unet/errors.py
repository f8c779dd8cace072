"""The one exception type for user mistakes."""


class InputError(ValueError):
    """Bad input from the user: a wrong file, shape, dtype or label value.

    The message is one line that names the problem. The command line prints it
    and exits with code 2; the napari widgets show it as a notification.
    """
