"""Re-run specs: a small JSON file that says how to make a run again, and what it should come out as.

A spec holds the run's full configuration (prompt, seed, steps, guidance, scheduler class and config,
size, recording policy, model source and weights hash, dtype, device, library versions) and the hashes
of what was recorded (``image_hash``, ``attention_hash``). ``rerun`` regenerates the run and says
whether image and attention match. Bit-identity is a same-version, same-device, same-dtype promise;
the result says which of those differ.

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
        if not self.match and self.differences:
            lines.append("bit-identity is promised only on the same device, dtype and library versions")
        return "\n".join(lines)


def rerun(spec: dict, *, model=None, device: str | None = None, progress: bool = False) -> RerunResult:
    """Regenerate the run a spec describes and compare it with the recorded hashes.

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
    if model is None or isinstance(model, (str, os.PathLike)):
        source = model if model is not None else config.model.get("source", "toy")
        pipe = load_pipeline(source, device=device or config.device, dtype=config.dtype)
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
    expected = spec["expected"]
    actual = {"image_hash": image_hash(run.image), "attention_hash": attention_hash(run.attention)}

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
    )
