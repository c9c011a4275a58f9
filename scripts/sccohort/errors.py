"""The one exception type for input a user must fix."""


class InputError(ValueError):
    """Bad input: the message names the file, sample, column or value and says what to do."""
