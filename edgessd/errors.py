"""edgessd's error types. The CLI turns any :class:`EdgessdError` into one line and exit code 2."""
from __future__ import annotations


class EdgessdError(Exception):
    """Base class: a problem the user can act on; the message says what to do."""


class ModelError(EdgessdError):
    """A model file is missing, not a GGUF, broken, or cannot be fetched."""


class RegistryError(ModelError):
    """A registry name is unknown, or its packages could not be fetched or verified."""


class LibraryError(EdgessdError):
    """The loaded libllama is missing, unpatched, or a call into it failed."""


class SkipUnsupportedError(LibraryError):
    """The model's architecture is not covered by the layer-skip patch."""


class InvalidArgumentError(EdgessdError):
    """An argument or flag value makes no sense (negative n, top_p > 1, bad skip spec...)."""


class ContextOverflowError(EdgessdError):
    """The prompt (plus what must be generated) does not fit in the context."""


class GrammarError(InvalidArgumentError):
    """A JSON schema or grammar is invalid, uses an unsupported feature, or does not parse."""
