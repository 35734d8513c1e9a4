"""Command-line errors a person can read: jsonargparse's message without the union bookkeeping, a close match.

A misspelled ``--model.init_args.lrr`` makes jsonargparse report every member of the ``LightningModule | None``
union it tried (``Expected a <class 'NoneType'>``, ``Given value: NestedArg(...)``) after 60 lines of usage.
:func:`concise_error` keeps what was wrong and adds the option names closest to a rejected one.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re

NOISE = (
    re.compile(r"^Does not validate against any of the Union subtypes$"),
    re.compile(r"^Subtypes: \["),
    re.compile(r"^Errors:$"),
    re.compile(r"^- Expected a <class 'NoneType'>"),
    re.compile(r"^Given value type: "),
    re.compile(r"^Given value: "),
)
SUBCLASS_HINT_START = re.compile(r"^- Not a valid subclass of ")
REJECTED = re.compile(r"Option '([^']+)' is not accepted")
CLASS_PATH = re.compile(r"class_path '([\w.]+)'")


def _options_of(class_path: str) -> list[str]:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    except Exception:  # a suggestion is a courtesy: never fail the error message itself
        return []


def concise_error(message: str) -> str:
    """``message`` without jsonargparse's union noise, each rejected option followed by its closest names."""
    kept: list[str] = []
    skipping_hint = False
    for line in message.splitlines():
        body = line.strip()
        if skipping_hint:
            if body.startswith("- a ") or body.startswith("Subclass types expect"):
                continue
            skipping_hint = False
        if SUBCLASS_HINT_START.match(body):
            skipping_hint = True
            continue
        if any(p.match(body) for p in NOISE):
            continue
        kept.append(line.rstrip())
    text = "\n".join(kept)
    class_paths = CLASS_PATH.findall(text)
    for option in dict.fromkeys(REJECTED.findall(text)):
        names = [n for path in class_paths for n in _options_of(path)]
        close = difflib.get_close_matches(option, names, n=3, cutoff=0.6)
        if close:
            text = text.replace(
                f"Option '{option}' is not accepted",
                f"Option '{option}' is not accepted (did you mean {', '.join(repr(c) for c in close)}?)",
            )
    return text


def unrecognized_with_suggestions(message: str, known: list[str]) -> str:
    """``unrecognized arguments: --trainer.max_epocs 3`` followed by the closest known flags."""
    flags = [token for token in message.split(":", 1)[-1].split() if token.startswith("--")]
    hints = []
    for flag in flags:
        close = difflib.get_close_matches(flag.split("=", 1)[0], known, n=3, cutoff=0.75)
        if close:
            hints.append(f"{flag}: did you mean {', '.join(close)}?")
    return "\n".join([message, *hints])


def help_tip(subcommand: str, message: str) -> str:
    """Where to read the accepted options: the rejected class's own help when the message names one."""
    paths = [path for path in CLASS_PATH.findall(message) if _options_of(path)]
    if paths:
        key = "model" if 'Parser key "model' in message else "data" if 'Parser key "data' in message else None
        if key is not None:
            return f"the accepted options: splitcv {subcommand} --{key}.help {paths[0]}"
    return f"every option: splitcv {subcommand} --help"
