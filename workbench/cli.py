"""The ``workbench`` command line.

    workbench generate --model toy --prompt "a red circle left of a blue square" --seed 3 --out runs/first
    workbench report runs/first runs/second -o report.html
    workbench rerun runs/first/spec.json
    workbench study --out runs/study
    workbench index runs/

Invalid arguments give a one-line message and exit code 2 (no traceback); a re-run that does not
match its recorded hashes exits with 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_MISMATCH = 1
EXIT_USAGE = 2


class _Usage(Exception):
    """A user error: printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    from workbench.core.schedulers import SCHEDULERS

    p = argparse.ArgumentParser(prog="workbench", description="Record, analyse and report diffusion runs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="generate one recorded run and save it as a run folder")
    g.add_argument("--model", default="toy", help="'toy' (default), a local diffusers folder or a hub id")
    g.add_argument("--prompt", required=True)
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("--steps", type=int, default=25)
    g.add_argument("--guidance", type=float, default=4.0)
    g.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None, help="default: the model's own")
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--width", type=int, default=None)
    g.add_argument(
        "--heads", choices=["mean", "all"], default="mean", help="keep head-averaged or per-head attention"
    )
    g.add_argument("--device", default=None, help="cpu, cuda, mps (default: cuda when available)")
    g.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    g.add_argument("--out", required=True, help="the run folder to write")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")

    r = sub.add_parser("report", help="write one self-contained HTML report of saved runs")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    r.add_argument("-o", "--output", required=True, help="the HTML file to write")
    r.add_argument("--title", default="Workbench report")

    rr = sub.add_parser("rerun", help="regenerate a run from its spec and compare image and attention hashes")
    rr.add_argument("spec", metavar="SPEC", help="a spec.json, or a run folder holding one")
    rr.add_argument("--model", default=None, help="use this model source instead of the spec's")
    rr.add_argument("--device", default=None)

    s = sub.add_parser(
        "study", help="the main job: a word-order and seed study on the embedded model, with a report"
    )
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--model", default="toy")
    s.add_argument("--prompt", default=None, help="default: a red circle left of a blue square")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    s.add_argument("--steps", type=int, default=25)
    s.add_argument("--guidance", type=float, default=4.0)
    s.add_argument("--device", default="cpu")

    for command in (g, rr, s):
        command.add_argument(
            "--threads",
            type=int,
            default=None,
            help="CPU threads for torch (default: torch's choice). On a machine shared with other work, "
            "1 thread or OMP_WAIT_POLICY=PASSIVE in the environment avoids OpenMP busy-waiting",
        )

    i = sub.add_parser("index", help="index the run folders under a folder (writes index.parquet)")
    i.add_argument("root")
    return p


# Request fields as the command line spells them, for error messages.
_OPTIONS = {
    "negative_prompt": "--negative-prompt",
    "guidance_scale": "--guidance",
    "prompt": "--prompt",
    "seed": "--seed",
    "steps": "--steps",
    "height": "--height",
    "width": "--width",
    "scheduler": "--scheduler",
}


def _as_options(message: str, renames: dict[str, str] | None = None) -> str:
    """A request's error message with the field it names spelled as the command-line option."""
    for field, option in {**_OPTIONS, **(renames or {})}.items():
        if message.startswith(field + " "):
            return option + message[len(field) :]
    return message


def _request(renames: dict[str, str] | None = None, **fields):
    """A ``Request`` from command-line values; its errors become usage errors naming the option."""
    from workbench.core.request import Request

    try:
        return Request(**fields)
    except (ValueError, TypeError) as err:
        raise _Usage(_as_options(str(err), renames)) from None


def _generate(a) -> int:
    from workbench.core.generate import generate
    from workbench.core.loading import load_pipeline
    from workbench.core.policy import RecordingPolicy
    from workbench.store.runs import save_run
    from workbench.store.spec import save_spec

    out = Path(a.out)
    if out.exists() and not a.overwrite:
        raise _Usage(f"--out {out} exists; choose a new folder or pass --overwrite")
    if not a.prompt.strip():
        raise _Usage("--prompt must not be empty")
    request = _request(
        prompt=a.prompt,
        negative_prompt=a.negative_prompt,
        seed=a.seed,
        steps=a.steps,
        guidance_scale=a.guidance,
        height=a.height,
        width=a.width,
        scheduler=a.scheduler,
    )  # checked before the model loads
    try:
        pipe = load_pipeline(a.model, device=a.device, dtype=a.dtype)
        run = generate(pipe, request, policy=RecordingPolicy(heads=a.heads))
    except (ValueError, TypeError) as err:
        raise _Usage(_as_options(str(err))) from None
    folder = save_run(run, out, overwrite=a.overwrite)
    save_spec(run, folder / "spec.json")
    print(run)
    print(f"run written to {folder} (re-run spec: {folder / 'spec.json'})")
    return 0


def _report(a) -> int:
    from workbench.store.report import report
    from workbench.store.runs import RunLoadError, load_run

    runs = []
    for d in a.run_dirs:
        try:
            runs.append(load_run(d))
        except RunLoadError as err:
            raise _Usage(str(err)) from None
    report(runs, a.output, title=a.title)
    return 0


def _rerun(a) -> int:
    from workbench.store.spec import SpecError, load_spec, rerun

    path = Path(a.spec)
    if path.is_dir():
        path = path / "spec.json"
    try:
        spec = load_spec(path)
    except SpecError as err:
        raise _Usage(str(err)) from None
    cfg = spec["config"]
    print(
        f"re-running “{cfg['prompt']}”, seed {cfg['seed']}, {cfg['steps']} steps on {a.device or cfg['device']} ..."
    )
    try:
        result = rerun(spec, model=a.model, device=a.device)
    except (ValueError, TypeError) as err:
        raise _Usage(str(err)) from None
    print(result.summary())
    print("MATCH" if result.match else "MISMATCH")
    return 0 if result.match else EXIT_MISMATCH


def _study(a) -> int:
    from workbench.study import DEFAULT_PROMPT, run_study

    for seed in a.seeds:  # the study's requests, checked before anything loads
        _request(
            {"seed": "--seeds"},
            prompt=a.prompt or DEFAULT_PROMPT,
            seed=seed,
            steps=a.steps,
            guidance_scale=a.guidance,
        )
    try:
        run_study(
            a.out,
            model=a.model,
            prompt=a.prompt or DEFAULT_PROMPT,
            seeds=tuple(dict.fromkeys(a.seeds)),
            steps=a.steps,
            guidance_scale=a.guidance,
            device=a.device,
        )
    except (ValueError, TypeError) as err:
        raise _Usage(str(err)) from None
    return 0


def _index(a) -> int:
    from workbench.store.index import load_index

    root = Path(a.root)
    if not root.is_dir():
        raise _Usage(f"{root} is not a folder")
    df = load_index(root)
    print(
        df.drop(columns=["image_hash", "negative_prompt"]).to_string(index=False)
        if len(df)
        else "no runs found"
    )
    print(f"index written to {root / 'index.parquet'} ({len(df)} runs)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # bad arguments: argparse prints usage and exits with 2
    from workbench.core.loading import ModelNotAvailableError

    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            parser.exit(
                EXIT_USAGE, f"workbench {args.command}: error: --threads must be >= 1, got {args.threads}\n"
            )
        import torch

        torch.set_num_threads(args.threads)
    handlers = {"generate": _generate, "report": _report, "rerun": _rerun, "study": _study, "index": _index}
    try:
        return handlers[args.command](args)
    except _Usage as err:
        parser.exit(EXIT_USAGE, f"workbench {args.command}: error: {err}\n")
    except (ModelNotAvailableError, NotImplementedError, FileNotFoundError) as err:
        parser.exit(EXIT_USAGE, f"workbench {args.command}: error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, "interrupted\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
