"""One root exception; every error a user can cause is a subclass with a message that says the fix."""


class EvopressError(Exception):
    """Root of every error evopress raises on purpose."""


class UnsupportedModelError(EvopressError):
    """The model's architecture has no adapter."""


class InfeasibleBudgetError(EvopressError):
    """The requested target cannot be met in the search space."""


class DataError(EvopressError):
    """Token data is missing, empty or unreachable."""


class RecipeError(EvopressError):
    """A recipe or config value is unknown or invalid."""


class JournalError(EvopressError):
    """A run directory's journal does not belong to this search or is corrupt."""


class ExportError(EvopressError):
    """A compressed model cannot be written in the requested format."""


class PlanError(EvopressError):
    """A drop plan does not fit the model it is applied to."""


class ModelLoadError(EvopressError):
    """A model directory or hub name cannot be read."""


class DatabaseError(EvopressError):
    """A variant database is missing, incomplete, corrupt or built for another model or setting."""
