"""The error raised for input a user can fix (bad file, bad folder, output already present)."""


class InputError(ValueError):
    """Bad input: the message says what is wrong and what to do about it."""


def write_error_message(err: OSError) -> str:
    """One line for an OSError met while writing outputs: which file, and why (no traceback)."""
    where = f" {err.filename}" if getattr(err, "filename", None) else ""
    return f"cannot write the output{where}: {err.strerror or err}"
