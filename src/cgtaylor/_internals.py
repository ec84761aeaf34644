"""The message both doors to private library internals (:mod:`._diffusers`, :mod:`._cache_dit`) give when an
internal they rely on is missing or changed."""

from __future__ import annotations


def missing_internal_message(library: str, internal: str, installed: str, tested: str, door: str,
                             error: BaseException | None = None) -> str:
    """Names the internal, the installed ``library`` version, the ``tested`` one and how to get it (``pip install
    library==tested``), or the door module (``door``: its ``__name__``) to update."""
    cause = f" ({type(error).__name__}: {error})" if error is not None else ""
    return (f"cgtaylor needs the {library} internal `{internal}`, which the installed {library} {installed} "
            f"does not provide as expected{cause}. cgtaylor was tested with {library} {tested}: "
            f"install that version (pip install {library}=={tested}) or update {door.replace('.', '/')}.py.")
