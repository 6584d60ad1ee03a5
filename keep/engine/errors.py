"""Errors of a training run that the user can fix (``keep train`` prints them as one line, exit 1)."""
from __future__ import annotations


class TrainSetupError(ValueError):
    """A config, init file or checkpoint that cannot be used; the message says what to do."""
