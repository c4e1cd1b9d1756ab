"""How many bytes a sweep will write, from the model's shapes, before any run starts.

One run folder holds the attention the policy keeps (``core.policy.estimate_bytes``, exact), the
float32 latents, x0 and initial noise of every denoising-loop iteration (``core.generate.loop_steps``,
exact), the image (at most its raw size as PNG) and run.json (the config and two token tables).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from workbench.core.policy import RecordingPolicy
from workbench.core.request import Request, RequestError

from .spec import SpecError, for_spec, request_fields, spec_field

JSON_BASE = 4096  # run.json without its token tables: config, provenance, hashes (measured ~3 KB)
JSON_PER_TOKEN = 160  # one token row as run.json writes it (indented JSON), in each of two tables
HEADER_PER_TENSOR = 160  # safetensors header entry: name, dtype, shape, offsets


def run_bytes(pipe, request: Request, policy: RecordingPolicy) -> int | RequestError | None:
    """The bytes ``save_run`` will write for ``request`` on ``pipe``; the model's ``RequestError`` when
    it refuses the request's settings (a size over its bound, say); None when they cannot be sized."""
    from workbench.core.adapters import adapter_for
    from workbench.core.generate import loop_steps
    from workbench.core.policy import estimate_bytes

    adapter = adapter_for(pipe)
    try:
        request = request.for_model(adapter)  # as generate checks it, with the sweep's size bound
    except RequestError as err:
        return err
    try:
        iterations = loop_steps(pipe, request)
        if iterations is None:
            return None
        latent_hw = adapter.latent_hw(request.height, request.width)
        tokens = sum(adapter.text_lengths({}).values())
        layers = adapter.layers()
        attention = (
            estimate_bytes(policy, layers, latent_hw, tokens, iterations) if policy.record_attention else 0
        )
        kept_layers = len(policy.select_layers(layers, latent_hw)) * (2 if policy.negative else 1)
    except (TypeError, ValueError):
        return None
    latent = adapter.latent_channels * latent_hw[0] * latent_hw[1] * 4  # one float32 latent
    trajectory = (2 * iterations + 2) * latent + iterations * 8  # latents, x0, noise; timesteps
    header = (4 + kept_layers) * HEADER_PER_TENSOR
    image = request.height * request.width * 3 + 1024
    text = JSON_BASE + 2 * tokens * JSON_PER_TOKEN
    return attention + trajectory + header + image + text


@dataclass(frozen=True)
class DiskEstimate:
    """The sweep's size: every planned run, and the part this call will write."""

    runs: int
    total_bytes: int
    todo_runs: int
    todo_bytes: int
    refused: int  # requests the model refuses (they will be failed rows, taking no space)

    def describe(self, budget: int | None = None) -> str:
        per = self.total_bytes / max(1, self.runs - self.refused)
        text = (
            f"disk estimate: {self.runs} runs × {human(per)} ≈ {human(self.total_bytes)}"
            f" ({self.todo_runs} to run now ≈ {human(self.todo_bytes)})"
        )
        if budget is not None:
            text += f"; disk budget {human(budget)}"
        return text


def estimate_disk(estimate, planned: list, todo: list[int]) -> DiskEstimate:
    """The size of every planned run and of the ``todo`` ones; ``estimate`` (an executor's) is asked once
    per distinct setting (prompts and seeds do not change the size), so every setting is checked against
    the model before any run starts.

    Args:
        estimate: ``executor.estimate``: bytes (or None, or the model's ``RequestError``) for each of a
            list of requests.
        planned: the sweep's ``PlannedRun`` list.
        todo: indices of the runs this call will make.

    Raises:
        SpecError: the model refuses one of the spec's settings (named by its spec field).
    """
    keys, distinct = [], {}
    for p in planned:
        setting = {k: v for k, v in request_fields(p.request).items() if k not in ("prompt", "seed")}
        key = json.dumps(setting, sort_keys=True)
        keys.append(key)
        if key not in distinct:
            distinct[key] = p.request.replace(prompt="", seed=0)
    sizes = dict(zip(distinct, estimate(list(distinct.values()))))
    refusal = next((b for b in sizes.values() if isinstance(b, RequestError)), None)
    if refusal is not None:
        raise SpecError(for_spec(refusal), field=spec_field(refusal))
    per_run = [sizes[k] for k in keys]
    return DiskEstimate(
        runs=len(planned),
        total_bytes=sum(b or 0 for b in per_run),
        todo_runs=len(todo),
        todo_bytes=sum(per_run[i] or 0 for i in todo),
        refused=sum(b is None for b in per_run),
    )


def human(n: float) -> str:
    """Bytes in the largest decimal unit that keeps the number >= 1 (``1.5 MB``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
