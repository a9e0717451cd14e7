"""The project's error types for bad user input. Command-line tools catch `RIFormerError`, print
its message on one line and exit 2; the subclasses say which input was wrong.

    RIFormerError
    ├── RecipeError       a recipe, an override or a run directory (distill/config.py re-exports it)
    ├── CheckpointError   a weights file, or a model name, that cannot be used as asked
    ├── HandoffError      a detector model YAML that cannot be built on a deploy backbone
    └── UsageError        command-line arguments of a tool
"""


class RIFormerError(ValueError):
    """Input that cannot be used; the message names the problem and the fix."""


class RecipeError(RIFormerError):
    """A recipe or override that cannot be used; the message names the key and the fix."""


class CheckpointError(RIFormerError):
    """A checkpoint that cannot be used as asked; the message names the problem and the fix."""


class HandoffError(RIFormerError):
    """A detector model YAML (rows, channels, backbone source) that cannot be built."""


class UsageError(RIFormerError):
    """Command-line arguments that cannot be used; the message names the argument."""
