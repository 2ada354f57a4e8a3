"""The one exception type for mistakes a user can fix (bad options, files, data)."""


class UserError(Exception):
    """A clear, one-line message for the user; the CLI prints it and exits with status 2."""


class CheckFailed(Exception):
    """A self-check found mtkit wrong (e.g. `mtkit bleu --sacrebleu` disagrees): exit status 1."""
