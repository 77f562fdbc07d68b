"""The typed errors vglamm raises. Each message says what went wrong and what to do."""


class VglammError(Exception):
    """Base class of every error raised on purpose by vglamm, editing and training."""


class VideoReadError(VglammError, OSError):
    """A video (file or frame folder) is missing, unreadable, truncated or has no frames."""


class VideoWriteError(VglammError, OSError):
    """A video could not be written (bad frames, bad path, or the output would replace an input)."""


class MaskError(VglammError, ValueError):
    """Masks are malformed: wrong shape or dtype, unreadable file, or sizes that do not match the video."""


class MissingWeightsError(VglammError, FileNotFoundError):
    """A checkpoint, component weight file or model directory is missing or incomplete."""


class NoTargetFoundError(VglammError):
    """The model did not ground the requested target (it produced no [SEG] for it)."""


class DataFormatError(VglammError, ValueError):
    """A dataset record or annotation file does not follow its documented format."""


class ConfigError(VglammError, ValueError):
    """An option has an invalid value (unknown editor, preset, backend ...)."""
