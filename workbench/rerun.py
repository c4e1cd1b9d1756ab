"""Making a recorded run again from its re-run recipe, and saying whether it came out the same.

Bit-identity is promised for the same numerics: model weights, device, dtype, torch thread count,
attention backend and library versions (``workbench.core.numerics``). ``RerunResult.summary`` tells a
real mismatch ("same numerics, hashes differ") from a re-run whose numerics differ, naming what
changed. A run recorded on a device this machine lacks is re-run on one it has (the result says so); a
run that was interrupted is compared on the steps it recorded; a re-run whose latents turn non-finite
raises ``RerunFailedError`` (a failure, not a mismatch and not an interrupt).

Example:
    recipe = RerunRecipe.load("runs/first/spec.json")
    result = rerun(recipe)
    print(result.summary())
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from workbench.core import loading
from workbench.core.numerics import numerics, numerics_differ, torch_threads
from workbench.core.run import Run, RunConfig
from workbench.edits.session import generate
from workbench.store.recipe import Hashes, RerunRecipe
from workbench.store.runs import image_hash


class RerunFailedError(RuntimeError):
    """The re-run itself failed (its latents turned non-finite): no hash to compare.

    Attributes:
        run: the failed run, kept for inspection.
    """

    def __init__(self, run: Run):
        self.run = run
        super().__init__(f"the re-run failed: {run.failure}")


def _shown(value) -> str:
    return value if isinstance(value, str) else repr(value)


@dataclass
class RerunResult:
    """What a re-run produced and how it compares with the recorded hashes.

    Attributes:
        run: the new run.
        image_match, attention_match: whether each hash matches (None: the recipe recorded none, e.g.
            the image of an interrupted run).
        expected, actual: the recorded hashes and the re-run's.
        differences: ``{what: (recorded, here)}`` for what changes the numbers: model weights, device,
            dtype, library versions and the other numerics (threads, attention backend).
        notes: what the re-run did differently, and why.
        numerics_recorded: whether the recorded run kept its numerics (runs saved before did not).
    """

    run: Run
    image_match: bool | None
    attention_match: bool | None
    expected: Hashes
    actual: Hashes
    differences: dict[str, tuple] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    numerics_recorded: bool = True

    @property
    def match(self) -> bool:
        return self.image_match is not False and self.attention_match is not False

    def verdict(self) -> str:
        """One line: a real mismatch, or a difference of numerics (named), or "" for a plain match."""
        changed = ", ".join(
            f"{k} {_shown(was)} → {_shown(now)}" for k, (was, now) in self.differences.items()
        )
        if self.match:
            return f"same hashes, though the numerics differ ({changed})" if changed else ""
        if changed:
            line = f"different numerics ({changed}): bit-identity not promised"
            if "threads" in self.differences:
                line += f"; re-run with {self.differences['threads'][0]} torch threads to compare bit for bit"
            return line
        if not self.numerics_recorded:
            return (
                "hashes differ with the same weights, device, dtype and library versions (the recorded "
                "run predates numerics records: its thread count is not known)"
            )
        return "same numerics, hashes differ: the run did not reproduce"

    def summary(self) -> str:
        def word(m):
            return "no record" if m is None else ("match" if m else "DIFFERS")

        lines = [
            f"image:     {word(self.image_match)} ({self.actual.image})",
            f"attention: {word(self.attention_match)} ({self.actual.attention})",
            f"device {self.run.config.device}, dtype {self.run.config.dtype}",
        ]
        lines += [f"note: {note}" for note in self.notes]
        verdict = self.verdict()
        return "\n".join(lines + ([verdict] if verdict else []))


def _where(config: RunConfig, device: str | None, notes: list[str]) -> tuple[str, str]:
    """The device and dtype to re-run on: the asked-for device, else the recorded one when this machine
    has it, else this machine's default (with the dtype that suits it)."""
    if device is not None:
        return loading.check_device(device), config.dtype
    if loading.device_available(config.device):
        return config.device, config.dtype
    here = loading.check_device(None)
    dtype = config.dtype
    if here == "cpu" and dtype in ("float16", "bfloat16"):
        dtype = "float32"  # half precision on CPU is slow where it is supported at all
    notes.append(
        f"the recorded device {config.device!r} is not available here; re-ran on {here!r}"
        + (f" in {dtype}" if dtype != config.dtype else "")
        + ", so bit-identity is not expected"
    )
    return here, dtype


def _pipeline(config: RunConfig, model, device: str | None, notes: list[str]):
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    source = model if model is not None else config.model.get("source", "toy")
    where, dtype = _where(config, device, notes)
    return loading.load_pipeline(source, device=where, dtype=dtype)


def _policy(config: RunConfig, notes: list[str]):
    """The recorded policy, with its store kept on the CPU when its device is not available here."""
    policy = config.policy
    if loading.device_available(policy.device):
        return policy
    notes.append(
        f"the recorded attention store device {policy.device!r} is not available here; kept it on 'cpu'"
    )
    return dataclasses.replace(policy, device="cpu")


def _differences(recorded: RunConfig, here: RunConfig, here_numerics: dict, weights: str) -> dict[str, tuple]:
    """``{what: (recorded, here)}`` for each thing that changes the numbers and differs."""
    out = {}
    was = recorded.model.get("weights_sha256")
    if was and was != weights:
        out["model weights"] = (was[:12], weights[:12])
    for key in ("device", "dtype"):
        if getattr(recorded, key) != getattr(here, key):
            out[key] = (getattr(recorded, key), getattr(here, key))
    recorded_numerics = recorded.provenance.numerics
    for versions_was, versions_here in (
        (recorded.versions, here.versions),
        (recorded_numerics.get("versions", {}), here_numerics.get("versions", {})),
    ):
        for lib, version in versions_was.items():
            if versions_here.get(lib) != version:
                out.setdefault(f"{lib} version", (version, versions_here.get(lib)))
    for key, pair in numerics_differ(recorded_numerics, here_numerics).items():
        if key != "versions":  # compared library by library above
            out.setdefault(key, pair)
    return out


def _same(recorded: str | None, here: str | None) -> bool | None:
    return None if recorded is None else recorded == here


def rerun(
    recipe: RerunRecipe,
    *,
    model=None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> RerunResult:
    """Make the run a recipe describes again and compare it with the recorded hashes.

    A recipe recorded on a device this machine lacks (CUDA, on a CPU-only machine) re-runs on the
    default device here, and ``notes`` says so. A recipe of an interrupted run re-runs in full and
    compares the attention of the steps the recording kept; there is no image.

    Args:
        recipe: a ``RerunRecipe`` (``RerunRecipe.load(path)``, ``RerunRecipe.from_run(run)``).
        model: a pipeline, or a source for ``load_pipeline`` (``"toy"``, a folder, a hub id) to use
            instead of the recipe's own model source.
        device: run on this device instead of the recorded one.
        threads: torch CPU threads for the re-run (None: leave torch's setting).
        progress: show a progress bar.

    Raises:
        RerunFailedError: the re-run's latents turned non-finite.
        KeyboardInterrupt: the re-run was stopped (Ctrl-C).
    """
    if not isinstance(recipe, RerunRecipe):
        raise TypeError(f"rerun needs a RerunRecipe (RerunRecipe.load(path)), got {type(recipe).__name__}")
    config, notes = recipe.config, []
    pipe = _pipeline(config, model, device, notes)
    with torch_threads(threads):
        # the recorded run was made at its size: no size bound (a run made past it re-runs; the memory
        # pre-flight still applies)
        request, policy = recipe.rerun_request(), _policy(config, notes)
        run = generate(pipe, request, edits=config.edits, policy=policy, progress=progress, size_limit=None)
        here_numerics = run.config.provenance.numerics or numerics(run.config.device, run.config.dtype)
    if run.failure is not None:
        raise RerunFailedError(run)
    if not run.complete:  # generate keeps what Ctrl-C left; a re-run stopped by the user is not a result
        raise KeyboardInterrupt
    actual = Hashes(image=image_hash(run.image), attention=recipe.attention_hash_of(run.attention))
    if not recipe.complete:
        done = recipe.steps_done
        notes.append(
            "the recorded run was incomplete"
            + (f" ({done} of {config.steps} steps)" if done is not None else "")
            + ": compared the attention of the steps it recorded; it has no image to compare"
        )
    return RerunResult(
        run=run,
        image_match=_same(recipe.expected.image, actual.image),
        attention_match=_same(recipe.expected.attention, actual.attention),
        expected=recipe.expected,
        actual=actual,
        differences=_differences(config, run.config, here_numerics, loading.weights_hash(pipe)),
        notes=notes,
        numerics_recorded=bool(config.provenance.numerics),
    )
