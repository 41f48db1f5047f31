"""The one exception type that user-facing commands turn into a one-line error."""


class MedyateError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ModelError(MedyateError):
    """The model file or module cannot be imported as given."""


class UnsupportedOpError(ModelError):
    """The model uses an operator (or operator setting) the compiler does not support."""
