"""Progress bars: one tqdm bar per long computation, switched off through tqdm itself.

Every loop in the package that shows progress goes through :func:`progress_bar`. The caller's ``progress``
flag only ever *disables* a bar; the environment variable ``TQDM_DISABLE=1`` silences every bar of a run - CI,
the test suite and the batch runner set it. tqdm >= 4.66 reads ``TQDM_*`` variables for any keyword a caller
leaves out (``tqdm.utils.envwrap``), so ``TQDM_MININTERVAL`` etc. work as tqdm documents them; but
``tqdm.notebook`` (what ``tqdm.auto`` is inside a Jupyter kernel) passes ``disable=False`` explicitly, which
overrides the variable, so this module reads ``TQDM_DISABLE`` itself.

In Jupyter, ``tqdm.auto`` draws an ipywidgets bar (``ipywidgets`` is a dependency): one output per bar in an
executed notebook, however often the bar is updated. Without a widget front end the bars are text on
``stderr``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["disabled_by_environment", "progress_bar"]

T = TypeVar("T")


def progress_bar(iterable: Iterable[T] | None = None, *, progress: bool = True, **kwargs: Any) -> tqdm:
    """A ``tqdm.auto`` bar that honours ``TQDM_DISABLE`` unless the caller switched it off.

    Parameters
    ----------
    iterable
        What to iterate over (``None`` for a manually updated bar with ``total=``).
    progress
        ``False`` disables the bar; ``True`` leaves the decision to tqdm (``TQDM_DISABLE`` and friends).
    **kwargs
        Passed to ``tqdm`` (``desc``, ``total``, ``initial``, ...). Do not pass ``disable``.

    Returns
    -------
    tqdm
        The bar (iterate over it, or call ``update``/``set_postfix``/``close``).
    """
    if "disable" in kwargs:
        raise TypeError("progress_bar: use progress=False instead of disable= (disable would override TQDM_DISABLE)")
    if not progress or disabled_by_environment():
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


def disabled_by_environment() -> bool:
    """True when ``TQDM_DISABLE`` is set to anything non-empty: tqdm's own reading (``bool(value)``, so even ``0``
    disables), which plain bars apply themselves and notebook bars would override."""
    return bool(os.environ.get("TQDM_DISABLE"))
