"""A sweep's plan: every planned run with its id, which of them an earlier call finished, the numerics
every run will have, and the disk estimate; made by ``plan_sweep`` once the workers have started.

Example:
    plan = plan_sweep(spec, executor.start(spec.model, spec.policy, cancel), folder, retry_failed=False)
    plan.todo          # indices of the runs to make now
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone

from workbench.core.numerics import NUMERIC_KEYS, numerics_differ

from .estimate import DiskEstimate
from .folder import SweepFolder
from .spec import PlannedRun, SweepSpec, policy_key, request_ids
from .worker import Job


@dataclass(frozen=True)
class SweepPlan:
    """What one call of a sweep will do.

    Attributes:
        sweep_id: the sweep's id (its spec and the weights' hash).
        weights_sha256: the weights every worker loaded.
        runs: every planned run, in the spec's order.
        ids: each run's request id.
        known: index in ``runs`` -> the row of a run not to make again (finished, or failed and not retried).
        damaged: request id -> why its run folder could not count as finished (it is made again).
        numerics: what decides the numbers besides the request (threads, device, dtype, attention
            backend, versions), the same for every worker.
        estimate: the disk estimate (None until ``with_estimate``; a sweep kept in memory has none).
    """

    sweep_id: str
    weights_sha256: str
    runs: tuple[PlannedRun, ...]
    ids: tuple[str, ...]
    known: dict[int, dict]
    damaged: dict[str, str] = field(default_factory=dict)
    numerics: dict = field(default_factory=dict)
    estimate: DiskEstimate | None = None

    @property
    def todo(self) -> list[int]:
        return [i for i in range(len(self.runs)) if i not in self.known]

    @property
    def skipped(self) -> int:
        return len(self.known)

    def jobs(self) -> list[Job]:
        return [Job(self.ids[i], self.runs[i].request, self.runs[i].edits) for i in self.todo]

    def by_id(self) -> dict[str, PlannedRun]:
        return dict(zip(self.ids, self.runs))

    def with_estimate(self, estimate: DiskEstimate) -> SweepPlan:
        return dataclasses.replace(self, estimate=estimate)

    def record(self, spec: SweepSpec, infos: list[dict]) -> dict:
        """What ``sweeps/<sweep_id>.json`` holds: the spec, the numerics, and every planned request."""
        return {
            "sweep_id": self.sweep_id,
            "spec": spec.to_dict(),
            "policy_key": policy_key(spec.policy),
            "weights_sha256": self.weights_sha256,
            "numerics": self.numerics,
            "workers": infos,
            "created": datetime.now(timezone.utc).isoformat(),
            "requests": [
                {
                    "request_id": rid,
                    "prompt_index": p.prompt_index,
                    "base_prompt": p.base_prompt,
                    "request": p.request.to_dict(),
                    **({"edits": [e.to_dict() for e in p.edits]} if p.edits else {}),
                }
                for rid, p in zip(self.ids, self.runs)
            ],
        }


PYTHON_OPTIONS = {"threads": "threads={}", "device": "device={!r}", "dtype": "dtype={!r}"}


class NumericsChangedError(ValueError):
    """A sweep started on numerics other than those its earlier runs were made with (a sweep runs every
    request with the same numerics, so it refuses rather than mix them).

    Attributes:
        differ: ``{key: (recorded, here)}`` for each of ``core.numerics.NUMERIC_KEYS`` that differs.
    """

    def __init__(self, differ: dict[str, tuple]):
        self.differ = differ
        super().__init__(self.named(PYTHON_OPTIONS))

    def __reduce__(self):
        return (type(self), (self.differ,))

    def named(self, options: dict[str, str]) -> str:
        """The message, with what to pass worded by ``options`` (``{"threads": "--threads {}"}``); keys
        without an option (library versions, attention backend) ask for the same setting."""
        made, asks = [], []
        for key, (recorded, here) in self.differ.items():
            made.append(_numeric_words(key, recorded, here))
            if key in options:
                asks.append(options[key].format(recorded))
            else:
                asks.append(f"the same {'library versions' if key == 'versions' else key.replace('_', ' ')}")
        return (
            f"this sweep's runs were made with {'; '.join(made)}; a sweep runs every request with the same "
            f"numerics: resume with {' and '.join(asks)}, or use a new folder"
        )


def _numeric_words(key: str, recorded, here) -> str:
    """``"1 torch thread per worker (here 2)"``, ``"torch 2.3.0 (here 2.4.0)"``."""
    if key == "threads":
        return f"{recorded} torch thread{'' if recorded == 1 else 's'} per worker (here {here})"
    if key == "versions" and isinstance(recorded, dict):
        here = here if isinstance(here, dict) else {}
        libs = [lib for lib in recorded if recorded[lib] != here.get(lib)]
        return ", ".join(f"{lib} {recorded[lib]} (here {here.get(lib)})" for lib in libs)
    return f"{key.replace('_', ' ')} {recorded} (here {here})"


def check_numerics(numerics: dict, before: dict | None, made_with: list[dict]) -> None:
    """Refuse (``NumericsChangedError``) numerics other than those of the sweep's plan record
    (``before``, an earlier call's) or of any finished run it reuses (``made_with``, as each recorded)."""
    recorded = [(before or {}).get("numerics") or {}, *made_with]
    for earlier in recorded:
        if isinstance(earlier, dict):
            # keys the workers differ in are not this sweep's numerics (run_sweep warns of them)
            differ = {k: v for k, v in numerics_differ(earlier, numerics).items() if k in numerics}
            if differ:
                raise NumericsChangedError(differ)


def numerics_words(numerics: dict) -> str:
    """``"every run on 1 torch thread per worker, cpu, float32"``."""
    threads = numerics.get("threads")
    return (
        f"every run on {threads} torch thread{'' if threads == 1 else 's'} per worker, "
        f"{numerics.get('device')}, {numerics.get('dtype')}"
    )


def same_weights(infos: list[dict]) -> str:
    """The weights' hash every worker loaded; a ``RuntimeError`` naming them when they differ."""
    hashes = {i["weights_sha256"] for i in infos}
    if len(hashes) != 1:
        by = ", ".join(f"{i['name']} on {i['host']}: {i['weights_sha256'][:12]}" for i in infos)
        raise RuntimeError(f"the workers loaded different weights ({by}); install the same model everywhere")
    return hashes.pop()


def common_numerics(infos: list[dict]) -> tuple[dict, dict[str, list]]:
    """The numerics the workers share, and ``{key: [each worker's value]}`` for those they do not."""
    each = [i.get("numerics") or {} for i in infos]
    common, differ = {}, {}
    for key in NUMERIC_KEYS:
        values = [n.get(key) for n in each]
        if all(v == values[0] for v in values):
            common[key] = values[0]
        else:
            differ[key] = values
    return common, differ


def plan_sweep(spec: SweepSpec, infos: list[dict], folder: SweepFolder, *, retry_failed: bool) -> SweepPlan:
    """The plan of one call: ids from the workers' weights, and what the folder already holds.

    Raises:
        RuntimeError: the workers loaded different weights.
        NumericsChangedError: the workers' numerics are not those the sweep's earlier runs were made with.
    """
    weights = same_weights(infos)
    sweep_id = spec.sweep_id(weights)
    runs = spec.plan()
    ids = request_ids([p.request for p in runs], spec.policy, weights, [p.edits for p in runs])
    known = {}
    for i, rid in enumerate(ids):
        row = folder.finished(sweep_id, rid, retry_failed=retry_failed)
        if row is not None:
            known[i] = row
    numerics, _ = common_numerics(infos)
    made_with = [folder.made_with[ids[i]] for i in known if ids[i] in folder.made_with]
    check_numerics(numerics, folder.planned_before(sweep_id), made_with)
    planned = set(ids)
    return SweepPlan(
        sweep_id=sweep_id,
        weights_sha256=weights,
        runs=tuple(runs),
        ids=tuple(ids),
        known=known,
        damaged={rid: why for rid, why in folder.damaged.items() if rid in planned},
        numerics=numerics,
    )
