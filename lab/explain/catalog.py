"""The hyperparameter catalog: every knob the lab exposes, explained once in assets/catalog.yaml.

    python -m lab explain lora_alpha        # one entry as Markdown
    python -m lab explain beta --trainer grpo   # the entry for the GRPO config's `beta`
    python -m lab explain --search warmup   # names of matching entries

The Explain tab, the CLI and the tests all read the same entries, so what the UI says about a knob
cannot drift from what the CLI prints. Each entry says what the knob is, the symptoms when it is too
low and too high, a simple default with its reason, how to tune it, and which live calculator in
lab/explain/calculators/ illustrates it.

One name can mean different knobs in different trainers (the lab's DPO `beta` is a preference
temperature, its GRPO `beta` a KL weight). An entry lists the config fields it explains as
`kind.field` (`fields: [grpo.beta]`); `lookup(name, kind)` uses them first, so the Train tab and
`explain NAME --trainer KIND` open the entry for that trainer, and a bare ambiguous name raises
AmbiguousName listing its meanings instead of silently picking one.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

import yaml

CATALOG_PATH = Path(__file__).resolve().parents[2] / "assets" / "catalog.yaml"
GROUPS = ("loading", "lora", "trainer", "architecture", "optimizer", "preference_rl")
LIVE_CALCULATORS = ("batch_math", "lr_curve", "lora_scale", "trainable_params", "memory_estimate",
                    "architecture_params")
"""Names of functions in lab.explain.calculators an entry may point to with `live`."""


@dataclass(frozen=True)
class Entry:
    name: str
    """The knob's name as the libraries spell it (scheduler and preset entries use a dotted name)."""
    group: str
    """One of GROUPS."""
    title: str
    what: str
    """What the knob is, in a few sentences, an analogy where it helps."""
    too_low: str
    """What you see in loss curves and outputs when it is too low (or the weaker option is chosen)."""
    too_high: str
    """What you see when it is too high (or the stronger option is chosen)."""
    default: str
    """A simple first value."""
    why: str
    """Why that default."""
    how_to_tune: str
    live: str | None
    """The calculator in lab.explain.calculators that shows this knob's numbers, or None."""
    aliases: tuple[str, ...] = ()
    """Other names people use for it; `get` accepts them."""
    fields: tuple[str, ...] = ()
    """Config fields of the lab this entry explains, as 'kind.field' (kind: a key of CONFIG_KINDS, or
    'dataset' for a DatasetSpec field). Only needed where the bare field name would open another entry."""

    @property
    def text_fields(self) -> dict[str, str]:
        return {"what": self.what, "too_low": self.too_low, "too_high": self.too_high, "default": self.default,
                "why": self.why, "how_to_tune": self.how_to_tune}


_REQUIRED = tuple(f.name for f in fields(Entry) if f.name not in ("aliases", "fields"))
_FIELD = re.compile(r"^[a-z]+\.[a-z0-9_]+$")


class AmbiguousName(KeyError):
    """A name that means different knobs in different trainers; the message lists them."""


def _entry(raw: dict, index: int) -> Entry:
    where = f"{CATALOG_PATH.name} entry {index} ({raw.get('name', '?')})"
    unknown = set(raw) - {f.name for f in fields(Entry)}
    if unknown:
        raise ValueError(f"{where}: unknown key '{sorted(unknown)[0]}'")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{where}: missing '{missing[0]}'")
    if raw["group"] not in GROUPS:
        raise ValueError(f"{where}: group must be one of {', '.join(GROUPS)}, got {raw['group']!r}")
    if raw["live"] is not None and raw["live"] not in LIVE_CALCULATORS:
        raise ValueError(f"{where}: live must be null or one of {', '.join(LIVE_CALCULATORS)}, got {raw['live']!r}")
    text = {k: str(raw[k]).strip() for k in _REQUIRED if k != "live"}
    empty = [k for k, v in text.items() if not v]
    if empty:
        raise ValueError(f"{where}: '{empty[0]}' is empty")
    bad = [f for f in raw.get("fields", ()) if not _FIELD.match(str(f))]
    if bad:
        raise ValueError(f"{where}: fields must be 'kind.field', got {bad[0]!r}")
    return Entry(**text, live=raw["live"], aliases=tuple(str(a) for a in raw.get("aliases", ())),
                 fields=tuple(str(f) for f in raw.get("fields", ())))


@cache
def _load() -> tuple[tuple[Entry, ...], dict[str, Entry], dict[tuple[str, str], Entry]]:
    raw = yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))
    items = tuple(_entry(r, i) for i, r in enumerate(raw))
    index: dict[str, Entry] = {}
    by_field: dict[tuple[str, str], Entry] = {}
    for e in items:
        for key in (e.name, *e.aliases):
            if key.lower() in index:
                raise ValueError(f"{CATALOG_PATH.name}: '{key}' names both {index[key.lower()].name} and {e.name}")
            index[key.lower()] = e
        for spec in e.fields:
            kind, name = spec.split(".")
            if (kind, name) in by_field:
                raise ValueError(f"{CATALOG_PATH.name}: field {spec} is claimed by {by_field[kind, name].name} "
                                 f"and {e.name}")
            by_field[kind, name] = e
    return items, index, by_field


def entries(group: str | None = None) -> list[Entry]:
    """All entries in catalog order, or those of one group."""
    items, _, _ = _load()
    if group is not None and group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}, got {group!r}")
    return [e for e in items if group is None or e.group == group]


def meanings(name: str) -> dict[str, Entry]:
    """kind -> entry for every trainer whose config field `name` has its own entry (empty when none does)."""
    _, _, by_field = _load()
    key = name.strip().lower()
    return {kind: e for (kind, field_name), e in sorted(by_field.items()) if field_name == key}


def _ambiguity(name: str, found: dict[str, Entry]) -> str:
    listed = "; ".join(f"{kind}: {e.name} ({e.title})" for kind, e in found.items())
    return (f"{name!r} means different knobs per trainer: {listed}. Name the trainer "
            f"(python -m lab explain {name} --trainer KIND) or the entry itself.")


def lookup(name: str, kind: str | None = None) -> Entry:
    """The entry for `name` in the config of trainer `kind` (sft, dpo, grpo, ppo, pretrain, or 'dataset'),
    or for the bare name when kind is None.

    A kind's own field entry wins ('beta' in grpo opens grpo_beta); then an entry name or alias; then the one
    entry the trainers' fields agree on. A name whose fields give different entries raises AmbiguousName
    listing them; any other miss raises KeyError with close matches."""
    _, index, by_field = _load()
    key = name.strip().lower()
    if kind is not None:
        if (kind, key) in by_field:
            return by_field[kind, key]
        if key not in index and meanings(key):
            raise AmbiguousName(f"no entry for {name!r} in a {kind} config; " + _ambiguity(name, meanings(key)))
    return get(name)


def get(name: str) -> Entry:
    """The entry called `name` or one of its aliases (case-insensitive); KeyError with close matches, or
    AmbiguousName when the name is a config field with different meanings per trainer (see lookup)."""
    _, index, _ = _load()
    key = name.strip().lower()
    if key in index:
        return index[key]
    found = meanings(key)
    if len({e.name for e in found.values()}) == 1:
        return next(iter(found.values()))
    if found:
        raise AmbiguousName(_ambiguity(name, found))
    close = difflib.get_close_matches(key, list(index), n=5, cutoff=0.6)
    suggestions = list(dict.fromkeys(index[c].name for c in close))
    hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else "; try search() or entries()"
    raise KeyError(f"no catalog entry named {name!r}{hint}")


def search(text: str) -> list[Entry]:
    """Entries containing every word of `text`, best first: a hit in the name or an alias ranks above
    one in the title, which ranks above one in the explanations."""
    words = text.lower().split()
    if not words:
        return entries()
    scored = []
    for i, e in enumerate(entries()):
        names = " ".join((e.name, *e.aliases)).lower()
        title = e.title.lower()
        body = " ".join(e.text_fields.values()).lower()
        if not all(w in names or w in title or w in body for w in words):
            continue
        score = sum(3 if w in names else 2 if w in title else 1 for w in words)
        score += 5 if text.strip().lower() in (e.name.lower(), *(a.lower() for a in e.aliases)) else 0
        scored.append((-score, i, e))
    return [e for _, _, e in sorted(scored)]


def render_markdown(entry: Entry) -> str:
    """One entry as Markdown, the same text the Explain tab and `python -m lab explain` show."""
    aka = f" (also: {', '.join(entry.aliases)})" if entry.aliases else ""
    aka += f" · lab fields: {', '.join(entry.fields)}" if entry.fields else ""
    live = f"\n\n*Live numbers:* `lab.explain.calculators.{entry.live}`" if entry.live else ""
    return (f"### {entry.title}\n\n`{entry.name}`{aka} · group: {entry.group}\n\n"
            f"**What it is.** {entry.what}\n\n"
            f"**Too low.** {entry.too_low}\n\n"
            f"**Too high.** {entry.too_high}\n\n"
            f"**Default.** {entry.default} — {entry.why}\n\n"
            f"**How to tune.** {entry.how_to_tune}{live}\n")


def render_meanings(name: str) -> str:
    """Markdown for an ambiguous name: one line per trainer, then each entry in full."""
    found = meanings(name)
    lines = [f"`{name}` means different knobs per trainer:", ""]
    lines += [f"- **{kind}**: `{e.name}` ({e.title})" for kind, e in found.items()]
    seen: dict[str, Entry] = {e.name: e for e in found.values()}
    return "\n".join(lines) + "\n\n" + "\n".join(render_markdown(e) for e in seen.values())
