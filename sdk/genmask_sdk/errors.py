"""Exception hierarchy of genmask-sdk.

Every error says what was wrong and how to fix it. Classes subclass the built-in exception that
fits, so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations


class GenMaskError(Exception):
    """Base class of every error raised on purpose by genmask-sdk."""


class InvalidInputError(GenMaskError, ValueError):
    """An input has the right type but a bad value (empty prompt, NaN pixels, zero-size image)."""


class InputTypeError(GenMaskError, TypeError):
    """An input has a type the SDK does not accept (say, a list where an image was expected)."""


class ArtifactNotFoundError(GenMaskError, FileNotFoundError):
    """A checkpoint, engine directory or file that should exist does not."""


class ArtifactMismatchError(GenMaskError, ValueError):
    """An artefact exists but does not match what it must match (checksum, config, versions, GPU)."""


class BackendUnavailableError(GenMaskError, RuntimeError):
    """An explicitly requested backend, precision or device cannot be used on this machine."""


class ConfigError(GenMaskError, ValueError):
    """A configuration value is invalid."""


class InvalidStateError(GenMaskError, RuntimeError):
    """A call is not allowed in the object's current state (predict before set_image, use after close)."""


class InvalidSampleError(InvalidInputError):
    """A training sample is unusable (missing image, mask/image size mismatch, empty instruction).

    The message names the sample (its id, and the file it came from where there is one).
    """


def one_line(error: BaseException) -> str:
    """An error's message on one line: its lines joined with '; ' (list bullets "- " dropped)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(line[2:] if line.startswith("- ") else line for line in lines)


class ExportError(GenMaskError, RuntimeError):
    """Exporting, converting or checking a graph failed."""
