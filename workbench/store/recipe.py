"""Re-run recipes: a small JSON file (``spec.json``) that says how to make a run again, and what it
should come out as.

A recipe holds the run's full configuration (request, recording policy, model source and weights hash,
dtype, device, numerics: threads, attention backend, library versions) and the hashes of what was
recorded (image, attention). ``workbench.rerun.rerun`` makes the run again and compares; this module
only reads, checks and writes recipes. Every field is checked once, when a recipe is read
(``RerunRecipe.from_dict``); a refusal is a ``RecipeError`` naming the field.

The file format::

    {"workbench_spec": 1, "config": {...run.json's config...}, "complete": true, "steps_done": 25,
     "attention_steps": [0, 1, ...], "expected": {"image_hash": "...", "attention_hash": "..."}}

Example:
    RerunRecipe.from_run(run).save("spec.json")
    recipe = RerunRecipe.load("spec.json")
    recipe.config.seed, recipe.expected.image
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from workbench.core.attention import AttentionStore
from workbench.core.errors import FieldError
from workbench.core.request import Request, RequestError
from workbench.core.run import Run, RunConfig
from workbench.store.runs import (
    RUN_JSON,
    ConfigError,
    attention_hash,
    config_from_dict,
    image_hash,
    read_small_file,
)

RECIPE_VERSION = 1  # the "workbench_spec" number of the files written here
RECIPE_FILE = "spec.json"  # a recipe's name inside a run folder
DTYPES = ("float32", "float16", "bfloat16")


class RecipeError(FieldError):
    """A re-run recipe that is missing, malformed or cannot be used, with the field as data.

    Attributes:
        field: the recipe field refused, as the file names it (``"expected.image_hash"``,
            ``"config.seed"``, ``"complete"``); ``""`` for the file as a whole.
        problem: what is wrong, without the field's name.
        where: the file (or ``"the re-run spec"`` for a dict).
    """

    def __init__(self, field: str, problem: str, *, where: str = "the re-run spec"):
        super().__init__(field, problem)
        self.where = where
        self.args = (f"{where}: {field} {problem}" if field else f"{where} {problem}",)

    def __reduce__(self):
        return (_recipe_error, (self.field, self.problem, self.where))


def _recipe_error(field: str, problem: str, where: str) -> RecipeError:
    return RecipeError(field, problem, where=where)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class Hashes:
    """What a run came out as: the SHA-256 of its image's pixels and of its attention store (None: not
    recorded, e.g. the image of an interrupted run)."""

    image: str | None = None
    attention: str | None = None

    @classmethod
    def of(cls, run: Run) -> Hashes:
        return cls(image=image_hash(run.image), attention=attention_hash(run.attention))

    def to_dict(self) -> dict:
        return {"image_hash": self.image, "attention_hash": self.attention}

    @classmethod
    def from_dict(cls, d, *, where: str = "the re-run spec") -> Hashes:
        if not isinstance(d, dict):
            raise RecipeError("expected", f"must be an object, got {type(d).__name__}", where=where)
        for key in ("image_hash", "attention_hash"):
            if not isinstance(d.get(key), (str, type(None))):
                raise RecipeError(
                    f"expected.{key}", f"must be a hex digest or null, got {d[key]!r}", where=where
                )
        return cls(image=d.get("image_hash"), attention=d.get("attention_hash"))


@dataclass(frozen=True)
class RerunRecipe:
    """How to make a run again, and what it came out as.

    Attributes:
        config: the run's full configuration.
        expected: the recorded hashes.
        complete: whether the recorded run finished (an interrupted run has no image to compare).
        steps_done: the steps the recorded run made (None in recipes written before it was kept).
        attention_steps: the steps its attention hash covers (None in recipes written before).
    """

    config: RunConfig
    expected: Hashes
    complete: bool = True
    steps_done: int | None = None
    attention_steps: tuple[int, ...] | None = None

    @classmethod
    def from_run(cls, run: Run) -> RerunRecipe:
        return cls(
            config=run.config,
            expected=Hashes.of(run),
            complete=run.complete,
            steps_done=run.steps_done,
            attention_steps=tuple(run.attention.steps),
        )

    def to_dict(self) -> dict:
        """The recipe as the JSON-ready dict ``spec.json`` holds."""
        return {
            "workbench_spec": RECIPE_VERSION,
            "config": self.config.to_dict(),
            "complete": self.complete,
            "steps_done": self.steps_done,
            "attention_steps": None if self.attention_steps is None else list(self.attention_steps),
            "expected": self.expected.to_dict(),
        }

    @classmethod
    def from_dict(cls, d, *, where: str = "the re-run spec") -> RerunRecipe:
        """A recipe from a parsed ``spec.json``, every field checked; refusals raise ``RecipeError``."""
        if not isinstance(d, dict) or "config" not in d or "expected" not in d:
            raise RecipeError(
                "", "is not a workbench re-run spec (needs 'config' and 'expected')", where=where
            )
        version = d.get("workbench_spec", RECIPE_VERSION)
        if not _is_int(version) or version < 0:
            raise RecipeError("workbench_spec", f"must be a version number, got {version!r}", where=where)
        if version > RECIPE_VERSION:
            raise RecipeError("", f"was written by a newer workbench (spec {version})", where=where)
        complete, done, steps = d.get("complete", True), d.get("steps_done"), d.get("attention_steps")
        if not isinstance(complete, bool):
            raise RecipeError("complete", f"must be true or false, got {complete!r}", where=where)
        if done is not None and not (_is_int(done) and done >= 0):
            raise RecipeError("steps_done", f"must be a step count or null, got {done!r}", where=where)
        if steps is not None and not (
            isinstance(steps, list) and all(_is_int(s) and 0 <= s < 2**63 for s in steps)
        ):
            raise RecipeError("attention_steps", "must be a list of step indices or null", where=where)
        return cls(
            config=_config(d["config"], where),
            expected=Hashes.from_dict(d["expected"], where=where),
            complete=complete,
            steps_done=done,
            attention_steps=None if steps is None else tuple(steps),
        )

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RerunRecipe:
        """Read and check a recipe file (or the ``spec.json`` of a run folder; a run folder ``save_run``
        wrote without one gives the recipe of the run it holds); problems raise ``RecipeError`` naming
        the file and the field."""
        path = Path(path)
        try:
            if path.is_dir() and not os.path.lexists(path / RECIPE_FILE) and (path / RUN_JSON).is_file():
                return cls._of_folder(path)
            if path.is_dir():
                path = path / RECIPE_FILE
            if not os.path.lexists(path):
                raise RecipeError("", "does not exist", where=f"spec file {path}")
            text = read_small_file(path)  # a regular file under the size cap only
        except OSError as err:
            problem = f"cannot be read ({err.strerror or err.__class__.__name__})"
            raise RecipeError("", problem, where=str(path)) from None
        except UnicodeDecodeError as err:
            raise RecipeError("", f"is not a JSON spec ({err})", where=str(path)) from None
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise RecipeError("", f"is not a JSON spec ({err})", where=str(path)) from None
        return cls.from_dict(d, where=str(path))

    @classmethod
    def _of_folder(cls, folder: Path) -> RerunRecipe:
        """The recipe of the run a folder holds (checked as ``load_run`` checks it)."""
        from workbench.store.runs import RunLoadError, load_run

        try:
            return cls.from_run(load_run(folder))
        except RunLoadError as err:
            raise RecipeError(
                "", f"holds no spec.json and its run cannot be read ({err})", where=str(folder)
            ) from None

    def rerun_request(self) -> Request:
        """The recorded request with the scheduler that ran, exactly (class and config)."""
        if not self.config.scheduler:
            return self.config.request
        return self.config.request.replace(scheduler=self.config.scheduler_spec())

    def attention_hash_of(self, store: AttentionStore) -> str | None:
        """The hash of a re-run's ``store`` over the steps this recipe's recording kept (all of them for a
        complete run). Recipes of interrupted runs written before ``attention_steps`` was kept name no
        steps: every run of leading steps is tried against the expected hash."""
        if self.complete:
            return attention_hash(store)
        if self.attention_steps is not None:
            part = _steps_of(store, list(self.attention_steps))
            return None if part is None else attention_hash(part)
        for k in range(len(store.steps) + 1):
            digest = attention_hash(_steps_of(store, store.steps[:k]))
            if digest == self.expected.attention:
                return digest
        return attention_hash(store)


def _config(config, where: str) -> RunConfig:
    """The recipe's config, checked as run.json's is, and usable for a re-run (dtype, scheduler)."""
    try:
        parsed = config_from_dict(config)
    except ConfigError as err:
        raise RecipeError(err.field, err.problem, where=where) from None
    if parsed.dtype not in DTYPES:
        raise RecipeError("config.dtype", f"must be one of {list(DTYPES)}, got {parsed.dtype!r}", where=where)
    if parsed.scheduler:
        try:
            parsed.request.replace(scheduler=parsed.scheduler_spec())
        except RequestError as err:
            raise RecipeError("config.scheduler", err.problem, where=where) from None
    return parsed


def _steps_of(store: AttentionStore, steps: list[int]) -> AttentionStore | None:
    """The part of ``store`` that covers ``steps`` (None when it lacks one of them)."""
    if not set(steps) <= set(store.steps):
        return None
    index = [store.steps.index(s) for s in steps]
    probs = {n: p[index] for n, p in store.probs.items()}  # (steps, heads, queries, tokens)
    return AttentionStore(probs=probs, steps=list(steps), shapes=dict(store.shapes), heads=store.heads)


def save_recipe(run: Run, path: str | os.PathLike) -> Path:
    """Write the re-run recipe of ``run`` to ``path`` (``RerunRecipe.from_run(run).save(path)``)."""
    return RerunRecipe.from_run(run).save(path)
