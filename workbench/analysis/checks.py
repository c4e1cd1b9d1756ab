"""Checks that runs are comparable before they are compared."""

from __future__ import annotations

from workbench.core.run import Run

FIELDS = {
    "model": lambda r: r.config.model.get("weights_sha256") or r.config.model.get("source"),
    "seed": lambda r: r.config.seed,
    "steps": lambda r: r.config.steps,
    "size": lambda r: (r.config.height, r.config.width),
    "guidance": lambda r: r.config.guidance_scale,
    "scheduler": lambda r: r.config.scheduler,
    "prompt": lambda r: r.config.prompt,
}


def check_same(runs: list[Run], fields: tuple[str, ...], what: str = "these runs") -> None:
    """Raise ``ValueError`` naming the first field in ``fields`` on which the runs differ.

    Example:
        >>> check_same([a, b], ("model", "seed"))  # doctest: +SKIP
    """
    if not runs:
        raise ValueError(f"{what}: no runs given")
    for r in runs:
        if not isinstance(r, Run):
            raise TypeError(f"{what}: expected Run objects, got {type(r).__name__}")
    for name in fields:
        values = [FIELDS[name](r) for r in runs]
        if any(v != values[0] for v in values[1:]):
            detail = ", ".join(f"{r.config.prompt!r}: {v!r}" for r, v in zip(runs, values))
            label = "model weights (weights_sha256)" if name == "model" else name
            raise ValueError(f"{what} must share the same {label}, but they differ: {detail}")


def check_complete(runs: list[Run]) -> None:
    for r in runs:
        if not r.complete or r.image is None:
            raise ValueError(
                f"run {r.config.prompt!r} (seed {r.config.seed}) is incomplete; compare complete runs"
            )


def check_pipe(pipe, run: Run) -> None:
    """Raise ``ValueError`` when ``pipe`` does not hold the weights ``run`` was made with."""
    from workbench.core.loading import weights_hash

    want = run.config.model.get("weights_sha256")
    have = weights_hash(pipe)
    if want and have and want != have:
        raise ValueError(
            f"the pipeline's weights (sha256 {have[:12]}...) are not the run's (sha256 {want[:12]}...); "
            f"load the model the run was made with ({run.config.model.get('source', '?')})"
        )


def check_unedited(run: Run, what: str) -> None:
    """Raise ``ValueError`` for a run that edits changed: ``what`` replays the model without them, so it
    would explain another computation than the run's."""
    if run.config.edits:
        raise ValueError(
            f"{what} replays the model without edits, and this run was edited ({run.config.edit_label}): "
            "it would explain another computation than the run's; attribute the unedited run of the same request"
        )
