"""One error type for bad user input: command-line tools print its message on one line and exit 2."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message names the problem and the fix."""
