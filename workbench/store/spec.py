"""Re-run specs: a small JSON file that says how to make a run again, and what it should come out as.

A spec holds the run's full configuration (prompt, seed, steps, guidance, scheduler class and config,
size, recording policy, model source and weights hash, dtype, device, library versions) and the hashes
of what was recorded (``image_hash``, ``attention_hash``). ``rerun`` regenerates the run and says
whether image and attention match. Bit-identity is a same-version, same-device, same-dtype promise;
the result says which of those differ. A run recorded on a device this machine lacks is re-run on one
it has (the result says so); a run that was interrupted is compared on the steps it recorded.

Example:
    save_spec(run, "spec.json")
    result = rerun(load_spec("spec.json"))
    result.image_match, result.attention_match
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.attention import AttentionStore
from workbench.core.run import Run, RunConfig
from workbench.store.runs import attention_hash, image_hash

SPEC_VERSION = 1


class SpecError(ValueError):
    """A spec file is missing, malformed or cannot be run here."""


def make_spec(run: Run) -> dict:
    """The re-run spec of ``run`` as a JSON-ready dict."""
    return {
        "workbench_spec": SPEC_VERSION,
        "config": run.config.to_dict(),
        "complete": run.complete,
        "steps_done": run.steps_done,
        "attention_steps": list(run.attention.steps),  # the steps the attention hash covers
        "expected": {
            "image_hash": image_hash(run.image),
            "attention_hash": attention_hash(run.attention),
        },
    }


def save_spec(run: Run, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text(json.dumps(make_spec(run), indent=1))
    return path


def load_spec(path: str | os.PathLike) -> dict:
    """Read and check a spec file; problems raise ``SpecError`` naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SpecError(f"{path} is not a JSON spec ({err})") from None
    check_spec(spec, str(path))
    return spec


def check_spec(spec, where: str = "spec") -> None:
    if not isinstance(spec, dict) or "config" not in spec or "expected" not in spec:
        raise SpecError(f"{where} is not a workbench re-run spec (needs 'config' and 'expected')")
    if spec.get("workbench_spec", 0) > SPEC_VERSION:
        raise SpecError(f"{where} was written by a newer workbench (spec {spec['workbench_spec']})")
    try:
        RunConfig.from_dict(spec["config"])
    except (TypeError, ValueError, KeyError) as err:
        raise SpecError(f"{where} has a malformed config ({err})") from None


@dataclass
class RerunResult:
    """What a re-run produced and how it compares with the recorded hashes."""

    run: Run
    image_match: bool | None  # None when the spec recorded no image (an incomplete run)
    attention_match: bool | None
    expected: dict
    actual: dict
    differences: dict = field(
        default_factory=dict
    )  # setting -> (recorded, here) for device, dtype, versions, weights
    notes: list[str] = field(default_factory=list)  # what the re-run did differently, and why

    @property
    def match(self) -> bool:
        return self.image_match is not False and self.attention_match is not False

    def summary(self) -> str:
        def word(m):
            return "no record" if m is None else ("match" if m else "DIFFERS")

        lines = [
            f"image:     {word(self.image_match)} ({self.actual['image_hash']})",
            f"attention: {word(self.attention_match)} ({self.actual['attention_hash']})",
            f"device {self.run.config.device}, dtype {self.run.config.dtype}",
        ]
        for key, (was, now) in self.differences.items():
            lines.append(f"note: {key} differs: recorded {was!r}, here {now!r}")
        lines += [f"note: {note}" for note in self.notes]
        if not self.match and self.differences:
            lines.append("bit-identity is promised only on the same device, dtype and library versions")
        return "\n".join(lines)


def _steps_of(store: AttentionStore, steps: list[int]) -> AttentionStore | None:
    """The part of ``store`` that covers ``steps`` (None when it lacks one of them)."""
    if not set(steps) <= set(store.steps):
        return None
    index = [store.steps.index(s) for s in steps]
    probs = {n: p[index] for n, p in store.probs.items()}  # (steps, heads, queries, tokens)
    return AttentionStore(probs=probs, steps=list(steps), shapes=dict(store.shapes), heads=store.heads)


def _partial_attention_hash(spec: dict, store: AttentionStore) -> str | None:
    """The hash of ``store`` over the steps an interrupted recording kept, as its spec recorded them.

    Specs without ``attention_steps`` name no steps: every run of leading steps is tried.
    """
    steps = spec.get("attention_steps")
    if isinstance(steps, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        part = _steps_of(store, steps)
        return None if part is None else attention_hash(part)
    expected = spec["expected"].get("attention_hash")
    for k in range(len(store.steps) + 1):
        digest = attention_hash(_steps_of(store, store.steps[:k]))
        if digest == expected:
            return digest
    return attention_hash(store)


def _where(config: RunConfig, device: str | None, notes: list[str]) -> tuple[str, str]:
    """The device and dtype to re-run on: the asked-for device, else the recorded one when this machine
    has it, else this machine's default (with the dtype that suits it)."""
    from workbench.core.loading import check_device, device_available

    if device is not None:
        return check_device(device), config.dtype
    if device_available(config.device):
        return config.device, config.dtype
    here = check_device(None)
    dtype = config.dtype
    if here == "cpu" and dtype in ("float16", "bfloat16"):
        dtype = "float32"  # half precision on CPU is slow where it is supported at all
    notes.append(
        f"the recorded device {config.device!r} is not available here; re-ran on {here!r}"
        + (f" in {dtype}" if dtype != config.dtype else "")
        + ", so bit-identity is not expected"
    )
    return here, dtype


def rerun(spec: dict, *, model=None, device: str | None = None, progress: bool = False) -> RerunResult:
    """Regenerate the run a spec describes and compare it with the recorded hashes.

    A spec recorded on a device this machine lacks (CUDA, on a CPU-only machine) re-runs on the
    default device here, and ``notes`` says so. A spec of an interrupted run (``"complete": false``)
    re-runs in full and compares the attention of the steps the recording kept; there is no image.

    Args:
        spec: a dict from ``make_spec`` / ``load_spec``.
        model: a pipeline, or a source for ``load_pipeline`` (``"toy"``, a folder, a hub id) to use
            instead of the spec's own model source.
        device: run on this device instead of the recorded one.
        progress: show a progress bar.
    """
    from workbench.core.generate import generate
    from workbench.core.loading import load_pipeline, weights_hash
    from workbench.core.policy import RecordingPolicy

    check_spec(spec)
    config = RunConfig.from_dict(spec["config"])
    notes: list[str] = []
    if model is None or isinstance(model, (str, os.PathLike)):
        source = model if model is not None else config.model.get("source", "toy")
        where, dtype = _where(config, device, notes)
        pipe = load_pipeline(source, device=where, dtype=dtype)
    else:
        pipe = model
    request = config.request
    if config.scheduler:  # the scheduler that ran, exactly (class and config)
        request = request.replace(scheduler=config.scheduler_spec())
    try:
        run = generate(
            pipe,
            request,
            policy=RecordingPolicy.from_dict(config.policy) if config.policy else None,
            progress=progress,
        )
    except ValueError as err:
        if "scheduler class" in str(err):
            raise SpecError(f"the spec names scheduler {config.scheduler!r}: {err}") from None
        raise
    if not run.complete:  # generate keeps what Ctrl-C left; a re-run stopped by the user is not a result
        raise KeyboardInterrupt
    expected = spec["expected"]
    actual = {"image_hash": image_hash(run.image), "attention_hash": attention_hash(run.attention)}
    if spec.get("complete") is False:
        actual["attention_hash"] = _partial_attention_hash(spec, run.attention)
        done = spec.get("steps_done")
        notes.append(
            "the recorded run was incomplete"
            + (f" ({done} of {config.steps} steps)" if isinstance(done, int) else "")
            + ": compared the attention of the steps it recorded; it has no image to compare"
        )

    def compare(key):
        return None if expected.get(key) is None else expected[key] == actual[key]

    differences = {}
    recorded_weights = config.model.get("weights_sha256")
    if recorded_weights and recorded_weights != weights_hash(pipe):
        differences["model weights"] = (recorded_weights[:12], weights_hash(pipe)[:12])
    for key in ("device", "dtype"):
        if getattr(config, key) != getattr(run.config, key):
            differences[key] = (getattr(config, key), getattr(run.config, key))
    for lib, version in config.versions.items():
        here = run.config.versions.get(lib)
        if here != version:
            differences[f"{lib} version"] = (version, here)
    return RerunResult(
        run=run,
        image_match=compare("image_hash"),
        attention_match=compare("attention_hash"),
        expected=dict(expected),
        actual=actual,
        differences=differences,
        notes=notes,
    )
