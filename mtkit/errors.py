"""The one exception type for mistakes a user can fix (bad options, files, data)."""


class UserError(Exception):
    """A clear, one-line message for the user; the CLI prints it and exits with status 2."""


class CheckFailed(Exception):
    """A self-check found mtkit wrong (e.g. `mtkit bleu --sacrebleu` disagrees): exit status 1."""


def describe(error: BaseException, limit: int = 200) -> str:
    """A one-line description of an exception for a user message: its type, and the last
    non-empty line of its text (library errors put the useful part last), cut to `limit`."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
