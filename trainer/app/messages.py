"""Error messages as the one line the CLI prints."""

from __future__ import annotations

from torchcamp.trainer.errors import UserError


def user_message(error: UserError) -> str:
    """The message of a UserError; one raised in a DataLoader worker arrives re-raised with the
    worker's traceback in its text ("Caught UserError in DataLoader worker..."): keep its own
    last line."""
    text = str(error)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split("Error: ", 1)[-1]
    return text


def one_line(error: BaseException) -> str:
    """Hydra's messages span lines (options, search path); keep what names the problem."""
    options = getattr(error, "options", None)
    missing = getattr(error, "missing_cfg_file", None)
    if options and missing and "/" in missing:
        group, name = missing.rsplit("/", 1)
        return f"unknown {group} option '{name}': choose one of {', '.join(options)}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(error).__name__
