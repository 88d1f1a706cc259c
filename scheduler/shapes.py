"""Definitions decoded once per shape: what a burst of apply-made schedules shares.

``rqbeat apply`` gives the schedules of a file the same settings (target, cron, zone,
``max_attempts``, owner): their hashes differ by key only, and every setting field of
the stored form (:mod:`scheduler.stored`) is the same. Decoding one from its fields
(JSON of each field, the definition text, validation, the compiled trigger) cost the
leader about half its CPU per dispatched job in a burst, the same work for each.

Here that work is done once per *shape*: the setting fields' stored values, as Redis
returned them. The cache key is that content itself, never an id or a version, so an
edit (which changes the fields) cannot be answered from an entry made before it. Each
schedule gets the shared decode under its own id (:meth:`Schedule.with_id`: only the
id is checked anew, and a cron with ``H``, hashed by the id, is compiled anew). A shape
that does not decode, or an id the shared decode refuses, is decoded in full for that
schedule, so its error names that schedule exactly as before.

The id is not a setting field (it is the key's), so one shape serves any id.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from scheduler.model import Schedule
from scheduler.records import decode_definition
from scheduler.stored import SETTING_FIELDS, row_text

#: Distinct shapes remembered (bounded: 100k schedules of distinct descriptions must
#: not hold 100k decodes; a file's schedules share a handful).
SHAPES_KEPT = 4_096
#: The id a shape is decoded under (valid by the id rules); no schedule sees it.
SHAPE_ID = "shape"

Shape = tuple[Any, ...]


def shape_of(settings: Sequence[Any]) -> Shape:
    """The cache key of a schedule's setting fields (an HMGET row of
    :data:`~scheduler.stored.SETTING_FIELDS`, bytes, text or None): their content."""
    return tuple(settings)


def decode_settings(schedule_id: str, settings: Sequence[Any]) -> Schedule:
    """The schedule ``schedule_id`` whose setting fields are ``settings`` (an HMGET row
    of :data:`~scheduler.stored.SETTING_FIELDS`); equal to
    ``decode_definition(schedule_id, row_text(SETTING_FIELDS, settings))``, and raises
    :class:`~scheduler.errors.CorruptDefinition` as that does."""
    shared = _shared(shape_of(settings))
    if shared is not None:
        try:
            return shared.with_id(schedule_id)
        except ValueError:  # an invalid id, or an H cron that fails under this id
            pass
    return decode_definition(schedule_id, row_text(SETTING_FIELDS, settings))


@lru_cache(maxsize=SHAPES_KEPT)
def _shared(shape: Shape) -> Schedule | None:
    """The shape decoded once under :data:`SHAPE_ID`; None when it does not decode (each
    schedule of that shape is then decoded, and refused, in full)."""
    try:
        return decode_definition(SHAPE_ID, row_text(SETTING_FIELDS, shape))
    except ValueError:
        return None
