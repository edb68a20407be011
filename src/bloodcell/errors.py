"""User-facing errors: each carries one clear sentence; the CLI prints it without a traceback."""


class BloodcellError(Exception):
    """Base class for errors caused by input, data or configuration rather than a bug."""


class ImageError(BloodcellError):
    """An image cannot be read or is not usable (unreadable, truncated, too large...)."""


class DataError(BloodcellError):
    """A dataset, folder, manifest or class list is missing or inconsistent."""


class CheckpointError(BloodcellError):
    """A checkpoint is missing, corrupt or incompatible."""


class ConfigError(BloodcellError):
    """A configuration value or command-line option is invalid."""


class WeightsUnavailableError(BloodcellError):
    """Pretrained weights cannot be obtained offline or online."""


class OutputError(BloodcellError):
    """An output cannot be written (a full disk, a lost folder); what was finished is kept."""
