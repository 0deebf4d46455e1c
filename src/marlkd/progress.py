"""Progress bars that appear only on a terminal.

``progress=True`` everywhere in the API means "show a bar if standard error is a terminal": piped or
redirected output (a log file, a batch job) gets no carriage-return updates. ``progress=False`` never shows
one (the CLI's ``--quiet``).
"""

from __future__ import annotations

from typing import Any


def progress_bar(enabled: bool = True, **kwargs: Any):
    """A ``tqdm`` bar, disabled unless ``enabled`` and standard error is a terminal."""
    from tqdm.auto import tqdm

    kwargs.pop("disable", None)
    return tqdm(disable=None if enabled else True, **kwargs)
