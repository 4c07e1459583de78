"""One exception type for everything a user can fix: the CLI prints its message as one line."""


class AdapterkitError(Exception):
    """A problem with the user's recipe, files or data, worded so they can fix it."""


class RecipeError(AdapterkitError):
    pass


class DataError(AdapterkitError):
    pass


class ModelError(AdapterkitError):
    pass


class RunDirError(AdapterkitError):
    pass


class Collapsed(AdapterkitError):
    """An evaluation found degenerate predictions and the recipe says `training.on_collapse: stop` (exit 3)."""


class PeerStopped(AdapterkitError):
    """A process of a multi-process run died or stopped answering: the others stop too (exit 1), and every machine
    continues from the last checkpoint with --resume."""

    exit_code = 1


class Interrupted(AdapterkitError):
    """SIGINT or SIGTERM stopped a long command (training after writing a checkpoint, a search, a series of repeats,
    generation) with what it finished kept: the CLI exits with 128 + the signal number."""

    def __init__(self, msg: str, signum: int):
        super().__init__(msg)
        self.signum = signum
        self.exit_code = 128 + signum
