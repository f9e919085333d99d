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


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint at that batch.

    A KeyboardInterrupt, so Ctrl-C in a notebook or script stops as it always does; the
    message says where the checkpoint is and how to continue (``resume=True``).
    Attributes: signum, epoch, batch, checkpoint (path or None), result (what ``train``
    would have returned: model, history, …).
    """

    def __init__(self, message, signum=None, epoch=None, batch=None, checkpoint=None,
                 result=None):
        super().__init__(message)
        self.signum, self.epoch, self.batch = signum, epoch, batch
        self.checkpoint, self.result = checkpoint, result


def one_line(obj) -> str:
    """An error text on one line (exception messages may carry newlines)."""
    return " ".join(str(obj).split())
