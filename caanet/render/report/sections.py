"""The report's sections, in order: each is a builder of its context keys and a pair of templates.

A section is registered once (:func:`register_section`): its ``key`` names its templates
``templates/sections/{key}.html.j2`` and ``templates/sections/{key}.tex.j2``, which the report's
two skeletons include in registration order, and its ``build(inputs)`` returns the context keys it
contributes (a dict; :class:`caanet.render.report.inputs.ReportInputs` holds every file read).
Adding a section is one module with a builder, its two templates and one :func:`register_section`
call (``after=`` places it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from caanet.errors import ResultsError


@dataclass(frozen=True)
class Section:
    """One section of the report: ``key`` (its templates' name) and ``build(inputs) -> dict``."""

    key: str
    build: Callable[..., dict]


SECTIONS: list[Section] = []


def register_section(section: Section, *, after: str | None = None) -> Section:
    """Add ``section`` at the end, or right after the section ``after``; a key registered twice or an
    unknown ``after`` raises :class:`ResultsError`."""
    keys = [s.key for s in SECTIONS]
    if section.key in keys:
        raise ResultsError(f"report section {section.key!r} is already registered")
    if after is None:
        SECTIONS.append(section)
    elif after not in keys:
        raise ResultsError(f"report section {section.key!r}: no section {after!r} to place it after (known: {keys})")
    else:
        SECTIONS.insert(keys.index(after) + 1, section)
    return section


def build_sections(inputs) -> dict:
    """Every registered section's context keys, merged (a key given by two sections raises)."""
    context: dict = {}
    for section in SECTIONS:
        part = section.build(inputs)
        clash = sorted(set(part) & set(context))
        if clash:
            raise ResultsError(f"report section {section.key!r} sets context keys {clash} already set")
        context.update(part)
    context["sections"] = [s.key for s in SECTIONS]
    return context
