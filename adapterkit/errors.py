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
