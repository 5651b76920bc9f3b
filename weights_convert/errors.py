"""Errors raised while reading Caffe files: each names the file, layer and blob where it can."""

from __future__ import annotations

MAX_PROBLEM = 600  # characters of a problem text kept in a message (a 10 MB token is not echoed)


def shorten(text: object, limit: int = MAX_PROBLEM) -> str:
    """``text`` cut to about ``limit`` characters (head and tail kept), saying how much was left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    head = max(limit - 120, 20)
    return f"{text[:head]} [... {len(text) - head - 80} more characters ...] {text[-80:]}"


class ConversionError(Exception):
    """A Caffe model could not be read or converted; the message says where."""

    def __init__(self, problem: str, *, file: str | None = None, layer: str | None = None,
                 blob: str | int | None = None, offset: int | None = None):
        self.problem = shorten(problem)
        self.file = file
        self.layer = layer
        self.blob = blob
        self.offset = offset
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if self.layer is not None:
            where.append(f"layer {self.layer!r}")
        if self.blob is not None:
            where.append(f"blob {self.blob}")
        if self.offset is not None:
            where.append(f"byte offset {self.offset}")
        return f"{self.problem} ({', '.join(where)})" if where else self.problem

    def located(self, *, file: str | None = None, layer: str | None = None,
                blob: str | int | None = None) -> "ConversionError":
        """The same error with missing location fields filled in (keeps the subclass)."""
        err = type(self).__new__(type(self))
        ConversionError.__init__(
            err, self.problem,
            file=self.file if self.file is not None else file,
            layer=self.layer if self.layer is not None else layer,
            blob=self.blob if self.blob is not None else blob,
            offset=self.offset)
        return err


class CorruptModelError(ConversionError):
    """The bytes are not a well-formed NetParameter (truncated, bit-flipped, not a caffemodel)."""


class PrototxtSyntaxError(ConversionError):
    """The text-format prototxt does not parse."""


class UnsupportedLayerError(ConversionError):
    """The network uses a layer type (or an option of one) that jaxviz does not implement."""


class ModelMismatchError(ConversionError):
    """Weights and architecture disagree: a missing or extra blob, a wrong shape or element count."""


class NonFiniteWeightsError(CorruptModelError):
    """A blob holds NaN or Inf values (a damaged file, or a snapshot of a diverged training run)."""


class OutputFolderError(ConversionError):
    """The output folder cannot be written, or holds something that must not be replaced."""

    def _message(self) -> str:
        return f"{self.problem} (folder {self.file})" if self.file is not None else self.problem
