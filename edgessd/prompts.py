"""Prompt files in Spec-Bench's JSONL format: one ``{"question_id", "category", "turns"}`` per line.

Everything that reads prompts (calibrate, bench) takes any such file, so users can
calibrate on their own traffic. edgessd ships its own domain sets (``edgessd/data``):
a calibration and an evaluation split of six domains, and one held-out domain.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import EdgessdError

MAX_LINE = 1 << 20  # one prompt line over 1 MiB is a mistake, not a prompt


class PromptFileError(EdgessdError):
    """A prompt file is missing, unreadable, or not Spec-Bench JSONL."""


@dataclass(frozen=True)
class Prompt:
    question_id: str
    category: str
    turns: tuple[str, ...]

    @property
    def first(self) -> str:
        return self.turns[0]


def parse_prompt_line(line: str, where: str) -> Prompt:
    """One JSONL line as a :class:`Prompt`; PromptFileError naming ``where`` if it is not one."""
    if len(line) > MAX_LINE:
        raise PromptFileError(f"{where}: line longer than {MAX_LINE} characters")
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as e:
        raise PromptFileError(f"{where}: not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise PromptFileError(f"{where}: expected an object with question_id, category and turns")
    qid, cat, turns = obj.get("question_id"), obj.get("category"), obj.get("turns")
    if isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)  # Spec-Bench itself numbers some questions
    if not isinstance(qid, str) or not qid:
        raise PromptFileError(f"{where}: question_id must be a non-empty string or integer")
    if not isinstance(cat, str) or not cat:
        raise PromptFileError(f"{where}: category must be a non-empty string")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t for t in turns):
        raise PromptFileError(f"{where}: turns must be a non-empty list of non-empty strings")
    return Prompt(qid, cat, tuple(turns))


def load_prompts(path: str | Path, *, categories: list[str] | None = None) -> list[Prompt]:
    """Every prompt in a JSONL file (blank lines skipped), optionally only some categories.

    Raises PromptFileError with the file and line number of the first bad line, for
    duplicate question ids, or for a file with no prompts (after filtering).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptFileError(f"prompt file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PromptFileError(f"cannot read prompt file {p}: {e}") from None
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for i, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        pr = parse_prompt_line(line.rstrip("\r"), f"{p}:{i}")
        if pr.question_id in seen:
            raise PromptFileError(f"{p}:{i}: duplicate question_id {pr.question_id!r}")
        seen.add(pr.question_id)
        prompts.append(pr)
    if categories:
        unknown = sorted(set(categories) - {pr.category for pr in prompts})
        if unknown:
            raise PromptFileError(f"{p}: no prompts in categories {', '.join(unknown)}")
        prompts = [pr for pr in prompts if pr.category in categories]
    if not prompts:
        raise PromptFileError(f"{p}: no prompts")
    return prompts


def bundled(name: str) -> Path:
    """A prompt file shipped with edgessd: ``domains-calib``, ``domains-eval`` or ``domains-ood``."""
    path = Path(str(resources.files("edgessd") / "data" / f"{name}.jsonl"))
    if not path.exists():
        raise PromptFileError(f"edgessd's bundled prompt set {name!r} is missing ({path})")
    return path


def by_category(prompts: list[Prompt]) -> dict[str, list[Prompt]]:
    """Prompts grouped by category, in first-seen order."""
    out: dict[str, list[Prompt]] = {}
    for pr in prompts:
        out.setdefault(pr.category, []).append(pr)
    return out
