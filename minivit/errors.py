"""The library's own exception types.

Every error minivit raises on purpose derives from :class:`MinivitError`, and the ones
caused by bad input also derive from :class:`ValueError`, so ``except ValueError`` in user
code keeps working while tests (and fuzzers) can insist on "our error, never another".
"""


class MinivitError(Exception):
    """Base class of every error minivit raises deliberately."""


class ConfigError(MinivitError, ValueError):
    """A configuration or argument is invalid (names the field and the value)."""


class DataError(MinivitError, ValueError):
    """A dataset file, archive or download is missing, corrupt or hostile."""


class CheckpointError(MinivitError, ValueError):
    """A checkpoint file is unreadable, corrupt, hostile or does not match the model."""


class TrainingError(MinivitError, RuntimeError):
    """Training cannot go on (e.g. the loss became non-finite)."""
