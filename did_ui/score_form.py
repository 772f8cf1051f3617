"""The Score page's run-settings inputs, built from `did_core.run_settings.FIELDS` — the same
definition the CLI's options and the job's argument list come from.

Every input starts blank, meaning "the trainer's value" (read from the run folder by the job); only
a field the user fills becomes an override, recorded and shown as one. No streamlit in did_core:
this module draws, `run_settings` parses.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from did_core import run_settings

KEY = "score_rs_"
"""Widget keys: KEY + field name."""
FIELD_NAMES = {"data": "Dataset", "reference": "Reference model", "policies": "Checkpoints",
               "run_dir": "TRL output folder", "settings": "Run settings", "name": "Run name"} | {
    f.name: f"Run setting {run_settings.LABELS[f.name]}" for f in run_settings.FIELDS}
"""How the page names each field an error is about."""


def settings_inputs() -> dict[str, str]:
    """One blank text input per overridable run setting, three to a row (inside the caller's form);
    returns {field name: text as typed}."""
    raw: dict[str, str] = {}
    cols = st.columns(3)
    for i, f in enumerate(run_settings.FIELDS):
        default = run_settings.default_text(f.name)
        hint = f"one of {', '.join(f.choices)}" if f.choices else f.help
        raw[f.name] = cols[i % 3].text_input(
            f"{run_settings.LABELS[f.name]}", key=KEY + f.name, placeholder=f"the trainer's (default {default})",
            help=f"{hint}. Blank: the value the trainer used, read from the run folder "
                 f"(`{f.flag}` on the command line).")
    return raw


def show_errors(errors: dict[str, str], slots: dict) -> None:
    """Each error under the field at fault (`slots`: field -> st.empty() drawn under it); a run
    setting's error under the settings expander, which may be closed; naming the field either way."""
    grouped: dict[str, list[str]] = {}
    for field, message in errors.items():
        slot = field if field in slots else "settings"
        grouped.setdefault(slot, []).append(f"{FIELD_NAMES.get(field, field)}: {message}")
    for slot, messages in grouped.items():
        with slots[slot].container():
            for m in messages:
                st.error(m, icon=":material/error:")


def parse_overrides(raw: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(overrides, errors): each filled field parsed as the CLI parses it; blank fields are absent."""
    overrides, errors = {}, {}
    for name, text in raw.items():
        if text is None or not str(text).strip():
            continue
        try:
            overrides[name] = run_settings.parse_value(run_settings.FIELD_BY_NAME[name], str(text).strip())
        except ValueError as exc:
            errors[name] = f"error: {exc}"
    return overrides, errors


def settings_table(resolved: run_settings.ResolvedSettings) -> pd.DataFrame:
    """The resolved settings as the pages show them: setting, value, source, the trainer's value."""
    rows = []
    for name, rec in resolved.to_manifest().items():
        rows.append({"setting": run_settings.LABELS.get(name, name), "value": _text(rec["value"]),
                     "source": rec["source"], "trainer's value": _text(rec["trainer"])
                     if rec["source"] == "override" or name in resolved.trainer else ""})
    return pd.DataFrame(rows)


def _text(v: Any) -> str:
    if isinstance(v, list | tuple):
        return " ".join(map(str, v))
    return "none" if v is None else str(v)
