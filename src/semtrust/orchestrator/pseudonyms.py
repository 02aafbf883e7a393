"""Pseudonyms of a run: files whose content digest does not enter coefficients (spec §2.5).

A pseudonym keeps every other fact of the file (path, owner, mode, filesystem) in
the coefficient and replaces only its content digest by the zero-length digest,
so a file whose content legitimately changes (a cache, a log read back) does not
break a model. The values go into the TMA, which writes them into the learned
model as ``pseudonym`` lines; a model's own lines apply when it is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from semtrust.errors import InputError
from semtrust.model.coefficient import pseudonym
from semtrust.model.tma import TMA

#: Applied to every learning run. The loader's cache is an index of library paths, not
#: code: every library it leads to is opened, mapped and measured by its own path and
#: content, so its digest adds nothing a model needs, while ``ldconfig`` rewrites it on
#: every package install (which would break every model learned before).
DEFAULT_PSEUDONYMS: tuple[str, ...] = ("/etc/ld.so.cache",)


def check_pseudonym_path(path: str) -> str:
    """The path as events name it (absolute, normalized), or InputError."""
    if not path.startswith("/") or "\0" in path:
        raise InputError(f"pseudonym path {path!r} must be absolute (as the workload sees it)",
                         field="--pseudonym")
    norm = os.path.normpath(path)
    return "/" + norm.lstrip("/")


def apply_pseudonyms(tma: TMA, paths: Iterable[str], *, learning: bool,
                     defaults: bool = True) -> list[str]:
    """Load the pseudonyms of ``paths`` (plus the defaults when learning); return them."""
    chosen = [check_pseudonym_path(p) for p in paths]
    if learning and defaults:
        chosen += [p for p in DEFAULT_PSEUDONYMS if p not in chosen]
    for p in chosen:
        tma.add_pseudonym(pseudonym(p))
    return chosen
