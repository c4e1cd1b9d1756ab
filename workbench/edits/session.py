"""``generate`` and ``record`` with ``edits=``: core's, inside an ``editing`` block.

``workbench.generate`` and ``workbench.record`` are these. A replace edit needs its source prompt's
attention for the same seed and settings: ``generate`` makes it first (``source_runs``: one plain,
recorded generation of the source prompt), unless a given source run already holds it.

Example:
    >>> run = generate(pipe, "a red circle left of a blue square", seed=0,
    ...                edits=[Edit.ablate("red", steps=range(10))])  # doctest: +SKIP
    >>> run.config.edits
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from ..core.edit import Edit
from ..core.generate import as_request, loop_steps
from ..core.generate import generate as core_generate
from ..core.policy import RecordingPolicy
from ..core.recorder import record as core_record
from ..core.request import SIZE_LIMIT, Request
from ..core.run import Run
from .apply import check_edits, check_steps, editing


def generate(
    pipe,
    request: Request | str,
    *,
    edits=None,
    sources=None,
    policy: RecordingPolicy | None = None,
    progress: bool = True,
    cancel=None,
    on_step=None,
    size_limit: float | None = SIZE_LIMIT,
    **fields,
) -> Run:
    """``workbench.core.generate`` with ``edits`` applied to the call (see ``editing``).

    Args:
        edits: an ``Edit`` or a list of them (None or ``[]``: a plain run). The run's
            ``config.edits`` keeps them.
        sources: recorded source runs for replace edits (a list of ``Run``); a source that is missing,
            or that lacks the attention the edit needs, is generated first with this call's seed and
            settings.
        policy, progress, cancel, on_step, size_limit, fields: as ``workbench.core.generate``.
    """
    edits = check_edits(edits)
    options = dict(policy=policy, progress=progress, cancel=cancel, on_step=on_step, size_limit=size_limit)
    if not edits:
        return core_generate(pipe, request, **options, **fields)
    request = as_request(request, fields)
    total = loop_steps(pipe, request)
    if total is not None:  # before any source is generated (the call checks them again)
        check_steps(edits, total)
    found = source_runs(pipe, request, edits, given=sources, size_limit=size_limit)
    with editing(pipe, edits, sources=found):
        return core_generate(pipe, request, **options)


def source_runs(pipe, request: Request, edits, *, given=None, size_limit=SIZE_LIMIT) -> dict[str, Run]:
    """Source prompt -> a run of it with ``request``'s seed and settings that recorded, per head in
    float32, every layer and step the replace edits among ``edits`` act on (given, or generated)."""
    given = {run.prompt: run for run in (given or [])}
    out = {}
    for source, needs in _needs(check_edits(edits)).items():
        run = given.get(source)
        if run is None or not _holds(run, request, needs):
            run = core_generate(
                pipe,
                request.replace(prompt=source),
                policy=RecordingPolicy(heads="all", dtype="float32", **needs),
                progress=False,
                size_limit=size_limit,
            )
        out[source] = run
    return out


def _needs(edits: tuple[Edit, ...]) -> dict[str, dict]:
    """Source prompt -> the ``layers`` and ``steps`` its replace edits act on (None: all)."""
    needs: dict[str, dict] = {}
    for edit in edits:
        if edit.kind != "replace":
            continue
        have = needs.setdefault(edit.source, {"layers": (), "steps": ()})
        for name in ("layers", "steps"):
            mine = getattr(edit, name)
            have[name] = (
                None if mine is None or have[name] is None else tuple(dict.fromkeys((*have[name], *mine)))
            )
    return needs


def _holds(run: Run, request: Request, needs: dict) -> bool:
    """Whether ``run`` is the source for ``request`` and kept what the edits need at full precision."""
    asked, had = run.config.request, request
    same = all(
        getattr(asked, name) == getattr(had, name)
        for name in ("seed", "steps", "height", "width", "guidance_scale", "negative_prompt", "scheduler")
    )
    policy = run.config.policy
    kept = policy.heads == "all" and policy.dtype == "float32" and run.complete
    steps_ok = policy.steps is None or (
        needs["steps"] is not None and set(needs["steps"]) <= set(policy.steps)
    )
    layers_ok = policy.layers is None or (
        needs["layers"] is not None and set(needs["layers"]) <= set(policy.layers)
    )
    return same and kept and steps_ok and layers_ok and not run.config.edits


@contextmanager
def record(pipe, policy: RecordingPolicy | None = None, *, edits=None, sources=None, **options):
    """``workbench.core.record`` with ``edits`` applied to the calls in the block (see ``editing``).

    Replace edits need ``sources`` here: ``{source prompt: run}`` (``source_runs`` makes them).
    """
    edits = check_edits(edits)
    with editing(pipe, edits, sources=sources) if edits else nullcontext():
        with core_record(pipe, policy, **options) as rec:
            yield rec
