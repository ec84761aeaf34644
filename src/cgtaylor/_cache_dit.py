"""The one door to cache-dit's internals.

cache-dit 1.5.3 keeps what a transformer-only run did (its context manager and the names of its cache contexts, one
per block list) in private attributes of the transformer, with no public reader that names the block lists. Every
access to a cache-dit name starting with ``_`` goes through a function here, so that a cache-dit release that renames
one fails here, with a :class:`CacheDitInternalsError` naming the internal, the installed cache-dit and the version
these accesses were tested with. ``tests/test_cache_dit_compat.py`` exercises each one;
``tests/test_diffusers_compat.py`` checks that no other module reaches past cache-dit's public names.
"""

from __future__ import annotations

from ._internals import missing_internal_message

TESTED_CACHE_DIT_VERSION = "1.5.3"
_MISSING = object()


class CacheDitInternalsError(RuntimeError):
    """A cache-dit internal that cgtaylor relies on is missing or changed in the installed cache-dit."""


def missing_internal(internal: str, error: BaseException | None = None) -> CacheDitInternalsError:
    import cache_dit

    return CacheDitInternalsError(missing_internal_message(
        "cache-dit", internal, cache_dit.__version__, TESTED_CACHE_DIT_VERSION, __name__, error))


def _transformer_attribute(transformer, name: str):
    value = getattr(transformer, name, _MISSING)
    if value is _MISSING:
        raise missing_internal(f"transformer.{name}", AttributeError(
            f"{type(transformer).__name__} has no attribute {name!r} after cache_dit.enable_cache"))
    return value


def context_manager(transformer):
    """The context manager that ``cache_dit.enable_cache`` attached to a transformer-only run."""
    return _transformer_attribute(transformer, "_context_manager")


def context_names(transformer) -> list[str]:
    """The names of the cache contexts ``cache_dit.enable_cache`` made on ``transformer``, one per block list
    (``"<block list name>_<id>"``)."""
    return list(_transformer_attribute(transformer, "_context_names"))
