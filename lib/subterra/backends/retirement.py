"""Retiring models: what each SDK says about a model's end of life, and the one-line messages about it.

Each SDK ships its own list of deprecated models: ``anthropic`` a table of end-of-life dates,
``openai`` shutdown dates in the notes of ``openai.types.shared.ChatModel``. A backend built for
a listed model warns once (:func:`warn_if_retiring`, a :class:`ModelRetirementWarning` with the
date); a model the API no longer knows becomes one :class:`~subterra.backends.base.ModelNotFound`
line (:func:`model_not_found`) naming the model, its end of life and the setting that picks another.
"""

from __future__ import annotations

import functools
import re
import warnings
from datetime import date, datetime
from pathlib import Path

from .base import DEFAULT_MODELS, ModelNotFound


class ModelRetirementWarning(UserWarning):
    """The model is on its SDK's list of deprecated models: a paid run on it fails from its end of life."""


# Where a user picks another model, for the one-line messages.
MODEL_SETTING = "--model (simulate: --frontier-model / --simulator-model), or model=... in Python"
_warned: set[tuple[str, str]] = set()


def end_of_life(backend: str, model: str) -> str | None:
    """The end-of-life date the backend's installed SDK gives for ``model``, or None if it lists none."""
    if backend == "anthropic":
        return anthropic_end_of_life(model)
    if backend == "openai":
        return openai_end_of_life(model)
    return None


def anthropic_end_of_life(model: str) -> str | None:
    """The end of life the installed ``anthropic`` SDK gives for ``model`` in its own table of deprecated models."""
    try:
        from anthropic.resources.messages.messages import DEPRECATED_MODELS
    except ImportError:              # an SDK that moved the table, or none installed
        try:
            from anthropic._data import DEPRECATED_MODELS
        except ImportError:
            return None
    return DEPRECATED_MODELS.get(model)


@functools.lru_cache(maxsize=1)
def _openai_shutdown_dates() -> dict[str, str]:
    """model -> announced shutdown date, read from the installed ``openai`` SDK's notes on deprecated chat models."""
    try:
        from openai.types.shared import chat_model

        text = Path(chat_model.__file__).read_text(encoding="utf-8")
    except (ImportError, OSError):         # no SDK, or one without the module
        return {}
    notes = text.partition("Deprecated values:")[2].partition('"""')[0]
    dates: dict[str, str] = {}
    for bullet in re.split(r"\n\s*- ", notes):
        flat = " ".join(bullet.split())
        match = re.search(r"shutdown date:\s*(\d{4}-\d{2}-\d{2})", flat)
        if match:
            for name in re.findall(r'"([^"]+)"', flat[:match.start()]):
                dates[name] = match.group(1)
    return dates


def openai_end_of_life(model: str) -> str | None:
    """The shutdown date the installed ``openai`` SDK announces for ``model``, or None."""
    return _openai_shutdown_dates().get(model)


def _eol_date(text: str) -> date | None:
    """'November 30th, 2026' (anthropic's table) or '2027-01-14' (openai's notes) as a date."""
    text = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text.strip())
    for form in ("%B %d, %Y", "%Y-%m-%d", "%b %d, %Y"):
        try:
            return datetime.strptime(text, form).date()
        except ValueError:
            continue
    return None


def retirement_notice(backend: str, model: str, today: date | None = None) -> str | None:
    """One line saying that ``model`` is deprecated and when it retires, or None if its SDK does not list it."""
    when = end_of_life(backend, model)
    if when is None:
        return None
    day, today = _eol_date(when), today or date.today()
    if day is not None and day <= today:
        status = f"reached its end of life on {when}: calls to it fail"
    else:
        status = f"is deprecated and reaches its end of life on {when}: a run after that date fails"
    current = DEFAULT_MODELS.get(backend)
    suggestion = f" (the current default is {current})" if current and current != model else ""
    return (f"{backend} model '{model}' {status} (the {backend} SDK's list of deprecated models); "
            f"pick another with {MODEL_SETTING}{suggestion}")


def warn_if_retiring(backend: str, model: str) -> str | None:
    """Warn (:class:`ModelRetirementWarning`) once per backend and model that its SDK lists as deprecated."""
    notice = retirement_notice(backend, model)
    if notice is not None and (backend, model) not in _warned:
        _warned.add((backend, model))
        warnings.warn(notice, ModelRetirementWarning, stacklevel=3)
    return notice


def model_not_found(backend: str, model: str, detail: str) -> ModelNotFound:
    """The one-line error for a model the API does not know; ``detail`` is the server's own words."""
    when = end_of_life(backend, model)
    eol = f"; its SDK gives its end of life as {when}" if when else ""
    current = DEFAULT_MODELS.get(backend)
    suggestion = f" (the current default is {current})" if current and current != model else ""
    return ModelNotFound(f"{backend} model '{model}' is retired or not found ({detail}){eol}; "
                         f"pick another with {MODEL_SETTING}{suggestion}")
