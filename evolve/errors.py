"""The errors and warnings of the Python API (`evolve.LawError`, `evolve.IntervalWarning`),
in a module of their own so the modules below the API raise the same ones."""


class LawError(ValueError):
    """A law that cannot do what was asked (it failed, or the question does not apply)."""


class IntervalWarning(UserWarning):
    """An interval whose level is not guaranteed (too few validation rows to calibrate it)."""
