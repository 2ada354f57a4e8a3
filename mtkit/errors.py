"""The exceptions that reach the user: mistakes they can fix (UserError), a signal that stopped
the command (Interrupted), and a self-check that found mtkit wrong (CheckFailed)."""


class UserError(Exception):
    """A clear, one-line message for the user; the CLI prints it and exits with status 2.
    quiet: said by another process already (rank 0 of a torchrun finds the same): exit 2 without
    printing it again."""

    quiet = False


class Interrupted(BaseException):
    """A signal (SIGTERM, SIGINT) stopped the command; the CLI exits with 128 + the signal's number,
    as a shell reports a process killed by it. Like KeyboardInterrupt, not an Exception: only
    clean-up (`finally`, `except BaseException`: temporary files removed, a replaced run restored)
    sees it on its way out. Not a KeyboardInterrupt, which the command-line library would turn
    into exit status 130 whatever the signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class CheckFailed(Exception):
    """A self-check found mtkit wrong (e.g. `mtkit bleu --sacrebleu` disagrees): exit status 1."""


def describe(error: BaseException, limit: int = 200) -> str:
    """A one-line description of an exception for a user message: its type, and the last
    non-empty line of its text (library errors put the useful part last), cut to `limit`."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
