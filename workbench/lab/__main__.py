"""Print the causal word-order lab's curves: ``python -m workbench.lab --seeds 16 --pairs 3``."""

from __future__ import annotations

import argparse
import time

from .causal import PAIRS, LabSettings, run_lab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.lab", description=__doc__)
    parser.add_argument("--model", default="toy", help="a model source for load_pipeline (default: toy)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 (default 4)")
    parser.add_argument("--pairs", type=int, default=len(PAIRS), choices=range(1, len(PAIRS) + 1))
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--ks", default="0,10,15,18,21,23,25", help="edit start steps, comma-separated")
    args = parser.parse_args(argv)
    from workbench import load_pipeline

    settings = LabSettings(
        pairs=PAIRS[: args.pairs],
        seeds=tuple(range(args.seeds)),
        steps=args.steps,
        ks=tuple(int(k) for k in args.ks.split(",")),
    )
    started = time.perf_counter()
    pipe = load_pipeline(args.model)
    result = run_lab(
        pipe, settings, progress=lambda d, t: print(f"\r{d}/{t} generations", end="", flush=True)
    )
    print(
        f"\nplacement judged by {result.judge}; {len(settings.pairs)} pairs × {len(settings.seeds)} seeds; "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(result.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
