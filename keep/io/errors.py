"""The error raised for input a user can fix (bad file, bad folder, output already present)."""


class InputError(ValueError):
    """Bad input: the message says what is wrong and what to do about it."""
