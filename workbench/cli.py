"""The ``workbench`` command line.

    workbench generate --model toy --prompt "a red circle left of a blue square" --seed 3 --out runs/first
    workbench report runs/first runs/second -o report.html
    workbench rerun runs/first/spec.json
    workbench study --out runs/study
    workbench index runs/
    workbench sweep sweep.json --out runs/sweep [--ray-local 4 | --ray auto]

Invalid arguments give a one-line message and exit code 2 (no traceback), checked before any model
loads; a re-run that does not match its recorded hashes exits with 1; a run that failed (its latents
turned non-finite) exits with 3 after saving it; anything unforeseen is one line and exit 4
(``WORKBENCH_TRACEBACK=1`` shows the stack); Ctrl-C exits with 130 (an interrupted ``generate``
saves the steps it made first). Building the parser imports no torch, so ``--help`` answers at once.
The commands that load a model hide the libraries' loading progress bars and notices that ask nothing of
the user; ``--verbose`` shows them. Warnings that matter (a prompt cut off, missing weights) show always.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

from workbench.names import DEFAULT_PROMPT, SCHEDULERS

EXIT_MISMATCH = 1
EXIT_USAGE = 2
EXIT_FAILED = 3  # the run failed (non-finite latents): saved for inspection, not a result
EXIT_ERROR = 4  # something unforeseen went wrong: one line, WORKBENCH_TRACEBACK=1 shows where
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C

GUIDANCE_HELP = (
    "classifier-free guidance weight (>= 0; <= 1 turns guidance off); default: the model's own "
    "(4.0 for the embedded model, 7.5 for Stable Diffusion 1.x/2.x)"
)
THREADS_HELP = (
    "CPU threads for torch, at most this machine's cores (default: torch's choice). On a machine shared "
    "with other work, 1 thread or OMP_WAIT_POLICY=PASSIVE in the environment avoids OpenMP busy-waiting"
)


class _Usage(Exception):
    """A user error: printed as one line, exit code 2."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; options without one to show (required, flags, ``None``) say in
    their help what happens instead."""

    def _get_help_string(self, action):
        if action.required or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


MODEL_HELP = "'toy' or 'toy-dit' (the embedded UNet and MM-DiT models), a local diffusers folder or a hub id"
VERBOSE_HELP = (
    "show the libraries' model-loading progress bars and notices (hidden by default; warnings that "
    "matter, like a prompt cut off, show either way)"
)


def _verbose_option(parser: argparse.ArgumentParser) -> None:
    """``--verbose``, on the commands that load a model."""
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="workbench",
        description="Record, analyse and report diffusion runs.",
        formatter_class=_HelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)

    for add in (_generate_parser, _report_parser, _rerun_parser, _study_parser, _index_parser, _sweep_parser):
        add(command)
    return p


def _generate_parser(command) -> None:
    g = command("generate", "generate one recorded run and save it as a run folder")
    g.add_argument("--model", default="toy", help=MODEL_HELP)
    g.add_argument("--prompt", required=True, help="the text prompt")
    g.add_argument(
        "--negative-prompt", default=None, help="text for the unconditional branch (default: none)"
    )
    g.add_argument("--seed", type=int, required=True, help="fixes the initial noise (0 <= seed < 2**63)")
    g.add_argument("--steps", type=int, default=25, help="denoising steps (1..1000)")
    g.add_argument("--guidance", type=float, default=None, help=GUIDANCE_HELP)
    g.add_argument(
        "--scheduler",
        choices=sorted(SCHEDULERS),
        default=None,
        help="the scheduler (default: the model's own)",
    )
    g.add_argument(
        "--height", type=int, default=None, help="image height in pixels (default: the model's size)"
    )
    g.add_argument(
        "--width", type=int, default=None, help="image width in pixels (default: the model's size)"
    )
    g.add_argument(
        "--no-size-limit",
        action="store_true",
        help="allow sizes above twice the model's native size (the memory check still refuses what cannot fit)",
    )
    g.add_argument(
        "--heads", choices=["mean", "all"], default="mean", help="keep head-averaged or per-head attention"
    )
    g.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)"
    )
    g.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default=None,
        help="weights dtype (default: float16 on CUDA, float32 elsewhere)",
    )
    g.add_argument(
        "--edits",
        default=None,
        help='edits acting on the run, as JSON: a list of Edit dicts, e.g. \'[{"kind": "ablate", "words": ["red"]}]\' (default: none)',
    )
    g.add_argument("--out", required=True, help="the run folder to write")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    g.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    _verbose_option(g)


def _edits(text: str | None) -> list:
    """``--edits`` as ``Edit`` values (checked before the model loads); a usage error naming the option."""
    if text is None:
        return []
    from workbench.core.edit import Edit, EditError

    try:
        given = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise _Usage(f"--edits is not JSON ({err})") from None
    if isinstance(given, dict):
        given = [given]
    if not isinstance(given, list):
        raise _Usage(f"--edits must be a JSON list of edits, got {type(given).__name__}")
    edits = []
    for i, d in enumerate(given):
        try:
            edits.append(Edit.from_dict(d))
        except EditError as err:
            raise _Usage(f"--edits[{i}]: {err}") from None
    return edits


def _report_parser(command) -> None:
    r = command("report", "write one self-contained HTML report of saved runs")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders to put in the report")
    r.add_argument("-o", "--output", required=True, help="the HTML file to write (not a folder)")
    r.add_argument("--title", default="Workbench report", help="the report's title")
    r.add_argument(
        "--filmstrips",
        action="store_true",
        help="load the runs' models (each source once) to show their x0 filmstrips side by side",
    )
    _verbose_option(r)


def _rerun_parser(command) -> None:
    rr = command("rerun", "regenerate a run from its spec and compare image and attention hashes")
    rr.add_argument("spec", metavar="SPEC", help="a spec.json, or a run folder holding one")
    rr.add_argument("--model", default=None, help="use this model source (default: the spec's own)")
    rr.add_argument(
        "--device",
        default=None,
        help="run here (default: the recorded device when this machine has it, else cuda when available, else cpu)",
    )
    rr.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    _verbose_option(rr)


def _study_parser(command) -> None:
    s = command(
        "study",
        "the main job: a word-order and seed study on both embedded models (the UNet and the MM-DiT), "
        "with one report comparing them",
    )
    s.add_argument("--out", required=True, help="the folder to write runs, index and report into")
    s.add_argument(
        "--model",
        nargs="+",
        default=["toy", "toy-dit"],
        help="the model(s): one runs the study on it alone; two or more run the same study on each and "
        "compare them side by side (default: toy toy-dit, the two embedded models). " + MODEL_HELP,
    )
    s.add_argument("--prompt", default=DEFAULT_PROMPT, help="the prompt, two objects in a relation")
    s.add_argument(
        "--swapped",
        default=None,
        help="the prompt's other word order (default: the prompt with its two objects exchanged)",
    )
    s.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="seeds; each order runs once per seed"
    )
    s.add_argument("--steps", type=int, default=25, help="denoising steps (1..1000)")
    s.add_argument("--guidance", type=float, default=None, help=GUIDANCE_HELP)
    s.add_argument("--device", default="cpu", help="where to run: cpu, cuda, cuda:1, mps")
    s.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    s.add_argument(
        "--interventions",
        action="store_true",
        help="also run the causal word-order lab on the prompt and its swap and add its four curves "
        "(attention injected from step k, into one resolution, the prompt switched at step k, a colour "
        "word ablated) to the report: about 16 more generations per seed (8 times the study's own 2); "
        "the prompt and its swap must be two-object captions",
    )
    _verbose_option(s)


def _index_parser(command) -> None:
    i = command("index", "index the run folders under a folder (writes index.parquet)")
    i.add_argument("root", help="the folder to scan for run folders")


def _sweep_parser(command) -> None:
    w = command("sweep", "run a sweep spec (prompts × word orders × seeds × settings); a rerun resumes it")
    w.add_argument("spec", metavar="SPEC", help="the sweep spec, a JSON file")
    w.add_argument(
        "--out", required=True, help="the folder for the run folders, index.parquet and report.html"
    )
    on = w.add_mutually_exclusive_group()
    on.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="run on a running Ray cluster: auto or HOST:6379 (default: in this process)",
    )
    on.add_argument(
        "--ray-local",
        metavar="N",
        type=int,
        default=None,
        help="run on a Ray instance started here with N CPUs (default: in this process)",
    )
    w.add_argument(
        "--workers", type=int, default=None, help="Ray workers (default: one per GPU, else CPUs / threads)"
    )
    w.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per worker, at most this machine's cores (default: 1, locally and on Ray, so a "
        "request gives the same numbers whichever runs it)",
    )
    w.add_argument(
        "--workers-write",
        action="store_true",
        help="Ray: every node sees --out at the same path, so workers save their runs (the default when every "
        "node is this machine; otherwise runs travel back to this process, which saves them)",
    )
    w.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available, else cpu)")
    w.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default=None,
        help="weights dtype (default: float16 on CUDA)",
    )
    w.add_argument(
        "--disk-budget",
        metavar="SIZE",
        default=None,
        help="refuse to start above SIZE, e.g. 500MB or 2GB (default: the spec's)",
    )
    w.add_argument("--retry-failed", action="store_true", help="run the requests that failed before again")
    w.add_argument("--no-report", action="store_true", help="do not write OUT/report.html")
    _verbose_option(w)


# Request fields as the command line spells them (``RequestError.field`` -> option).
_OPTIONS = {
    "negative_prompt": "--negative-prompt",
    "guidance_scale": "--guidance",
    "prompt": "--prompt",
    "seed": "--seed",
    "seeds": "--seeds",
    "steps": "--steps",
    "height": "--height",
    "width": "--width",
    "size": "--width/--height",
    "scheduler": "--scheduler",
    "source": "--model",
}
_HINTS = {"size": "pass --no-size-limit to lift the bound"}  # Python's hints, as the command line says them


def _as_option(err, renames: dict[str, str] | None = None) -> str:
    """A refused value's message naming the command-line option (by the error's ``field``)."""
    from workbench.core.errors import FieldError

    if not isinstance(err, FieldError) or err.label:  # an edit's or a policy's field is not an option
        return str(err)
    option = {**_OPTIONS, **(renames or {})}.get(err.field, err.field)
    return err.named(option, hint=_HINTS.get(err.field))


def _request(renames: dict[str, str] | None = None, **fields):
    """A ``Request`` from command-line values; its errors become usage errors naming the option."""
    from workbench.core.request import Request, RequestError

    try:
        return Request(**fields)
    except RequestError as err:
        raise _Usage(_as_option(err, renames)) from None


@contextlib.contextmanager
def _user_errors(renames: dict[str, str] | None = None):
    """Errors a model source, a setting or a file can cause, as usage errors."""
    from workbench.core.loading import ModelNotAvailableError

    try:
        yield
    except (ValueError, TypeError, NotImplementedError, FileNotFoundError, ModelNotAvailableError) as err:
        raise _Usage(_as_option(err, renames)) from None


def _device(value: str | None) -> str | None:
    """``--device`` checked against this machine's torch (``None`` stays the default)."""
    if value is None:
        return None
    from workbench.core.loading import check_device

    with _user_errors():
        return check_device(value, "--device")


def _writable(target: Path, label: str) -> None:
    """Refuse, before any work, an output under a file or in a folder that cannot be written.

    ``target`` is the path to be created; its nearest existing ancestor must be a writable folder (tried
    for real: permission bits do not tell for root, read-only mounts or network folders).
    """
    place = target.parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise _Usage(f"{label}: {place} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".workbench-write-check.", dir=place))
    except OSError as err:
        raise _Usage(f"{label}: cannot write in {place} ({err.strerror or err})") from None


def _generate(a) -> int:
    from workbench.core.generate import generate
    from workbench.core.loading import load_pipeline
    from workbench.core.policy import RecordingPolicy
    from workbench.core.request import SIZE_LIMIT
    from workbench.store.recipe import save_recipe
    from workbench.store.runs import save_run

    out = Path(a.out)
    edits = _edits(a.edits)
    if os.path.lexists(out) and not a.overwrite:
        raise _Usage(f"--out {out} exists; choose a new folder or pass --overwrite")
    _writable(out, f"--out {out}")
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
    device = _device(a.device)
    with _user_errors():
        pipe = load_pipeline(a.model, device=device, dtype=a.dtype)
        limit = None if a.no_size_limit else SIZE_LIMIT
        policy = RecordingPolicy(heads=a.heads)
        if edits:
            from workbench.edits.session import generate as generate_edited

            run = generate_edited(pipe, request, edits=edits, policy=policy, size_limit=limit)
        else:
            run = generate(pipe, request, policy=policy, size_limit=limit)
    # another generate may have written --out meanwhile: this run then goes beside it, never over it
    folder = save_run(run, out, overwrite=a.overwrite, beside=not a.overwrite)
    save_recipe(run, folder / "spec.json")
    print(run)
    if folder != out:
        print(f"{out} was written by another run meanwhile; this run went beside it", file=sys.stderr)
    print(f"run written to {folder} (re-run spec: {folder / 'spec.json'})")
    if run.failure:  # not an interrupt: the run went wrong, and is kept for inspection
        print(f"the run failed: {run.failure}; it is saved in {folder} for inspection", file=sys.stderr)
        return EXIT_FAILED
    if not run.complete:  # Ctrl-C during generation: generate returns the steps made so far
        print(
            f"interrupted after {run.steps_done} of {run.config.steps} steps; the incomplete run is saved in {folder}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def _report(a) -> int:
    from workbench.report import report
    from workbench.store.runs import RunLoadError, load_run

    out = Path(a.output)
    if out.is_dir():
        raise _Usage(f"-o {out} is a folder; name the HTML file to write, e.g. {out / 'report.html'}")
    _writable(out, f"-o {out}")
    runs = []
    for d in a.run_dirs:
        try:
            runs.append(load_run(d))
        except RunLoadError as err:
            raise _Usage(str(err)) from None
    report(runs, out, title=a.title, pipes=_report_pipes(runs) if a.filmstrips else ())
    return 0


def _report_pipes(runs) -> list:
    """The pipelines of the runs' model sources (each loaded once, on the CPU); a source that cannot be
    loaded here is said and left out (its runs' filmstrips are then not shown)."""
    from workbench.core.errors import first_line
    from workbench.core.loading import load_pipeline

    pipes = []
    for source in dict.fromkeys(str(r.config.model.get("source", "")) for r in runs):
        try:
            pipes.append(load_pipeline(source, device="cpu"))
        except Exception as err:  # a hub model not cached here, a folder moved: the report still comes
            print(f"--filmstrips: model {source!r} not loaded ({first_line(err)})", file=sys.stderr)
    return pipes


def _rerun(a) -> int:
    from workbench.store.recipe import RecipeError, RerunRecipe

    try:
        recipe = RerunRecipe.load(a.spec)  # a spec.json, or a run folder holding one
    except RecipeError as err:
        raise _Usage(str(err)) from None
    device = _device(a.device)
    from workbench.rerun import RerunFailedError, rerun

    cfg = recipe.config
    edited = f", with the edits {cfg.edit_label}" if cfg.edits else ""
    print(
        f"re-running “{cfg.prompt}”, seed {cfg.seed}, {cfg.steps} steps{edited} (recorded on {cfg.device}) ..."
    )
    with _user_errors():
        try:
            result = rerun(recipe, model=a.model, device=device)
        except RerunFailedError as err:
            print(f"workbench rerun: failed: {err.run.failure}", file=sys.stderr)
            return EXIT_FAILED
    print(result.summary())
    print("MATCH" if result.match else "MISMATCH")
    return 0 if result.match else EXIT_MISMATCH


def _study(a) -> int:
    from workbench.analysis import permutations
    from workbench.study import StudyFailedError, run_study

    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise _Usage(f"--out {out} is a file; name a folder for the study's runs and report")
    _writable(out / "runs", f"--out {out}")
    from workbench.core.request import parse_seeds

    with _user_errors():  # the study's requests, checked before anything loads
        seeds = parse_seeds(list(dict.fromkeys(a.seeds)))
    _request(prompt=a.prompt, seed=seeds[0], steps=a.steps, guidance_scale=a.guidance)
    if a.swapped is not None:
        _request({"prompt": "--swapped"}, prompt=a.swapped, seed=seeds[0])
    with _user_errors():
        if a.swapped is not None:
            orders = [a.prompt, a.swapped]
        else:  # a prompt without words has no other word order
            orders = permutations(a.prompt, kind="relation") if a.prompt.split() else [a.prompt]
    if len(orders) < 2:
        raise _Usage(
            f"no word-order swap found for --prompt {a.prompt!r}: name two objects around a relation "
            f"word (like {DEFAULT_PROMPT!r}), or give the other order with --swapped"
        )
    device = _device(a.device)
    with _user_errors():
        try:
            result = run_study(
                out,
                model=a.model[0] if len(a.model) == 1 else list(a.model),
                prompt=a.prompt,
                swapped=a.swapped,
                seeds=seeds,
                steps=a.steps,
                guidance_scale=a.guidance,
                device=device,
                interventions=a.interventions,
            )
        except StudyFailedError as err:  # runs failed: not a bad option, and not a result
            print(f"workbench study: failed: {err}", file=sys.stderr)
            return EXIT_FAILED
    if getattr(result, "lab", None) is not None:  # a study without --interventions has no lab
        _tell_lab(result)
    return 0


def _tell_lab(result) -> None:
    """Where the study's lab went, and its curves in a line each."""
    from workbench.study import INTERVENTIONS, lab_lines

    print(f"interventions: {result.lab_table} (rows beside it); in the report: “{INTERVENTIONS}”")
    print(f"  placement judged by {result.lab.judge}; mean [95% interval] per x:")
    for line in lab_lines(result.lab.summary):
        print(f"  {line}")


def _index(a) -> int:
    from workbench.store.index import SweepFolderError, load_index

    root = Path(a.root)
    if not root.is_dir():
        raise _Usage(f"{root} is not a folder")
    _writable(root / "index.parquet", f"the index of {root}")
    with warnings.catch_warnings(record=True) as caught:  # damaged run folders: one line each, not a stack
        warnings.simplefilter("always")
        try:
            df = load_index(root)
        except SweepFolderError as err:  # a sweep's own index is not written over
            raise _Usage(str(err)) from None
    for w in caught:
        print(f"workbench index: warning: {w.message}", file=sys.stderr)
    print(
        df.drop(columns=["image_hash", "negative_prompt"]).to_string(index=False)
        if len(df)
        else "no runs found"
    )
    print(f"index written to {root / 'index.parquet'} ({len(df)} runs)")
    return 0


def _sweep(a) -> int:
    from workbench.sweeps.options import ExecutorOptions, OptionsError
    from workbench.sweeps.spec import SpecError, load_spec, parse_bytes

    try:
        spec = load_spec(a.spec)
        budget = parse_bytes(a.disk_budget, name="--disk-budget")
    except SpecError as err:
        raise _Usage(str(err)) from None
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise _Usage(f"--out {out} is a file; name a folder for the sweep")
    _writable(out / "index.parquet", f"--out {out}")
    on_ray = a.ray is not None or a.ray_local is not None
    if not on_ray and (a.workers is not None or a.workers_write):
        raise _Usage("--workers and --workers-write go with --ray or --ray-local")
    try:
        options = ExecutorOptions(
            address=a.ray,
            num_cpus=a.ray_local,
            workers=a.workers,
            threads=a.threads,
            device=a.device if on_ray else _device(a.device),
            dtype=a.dtype,
            workers_write=True if a.workers_write else None,
        )
    except OptionsError as err:  # ExecutorOptions' fields as the options that set them
        named = {"address": "--ray", "num_cpus": "--ray-local"}
        option = named.get(err.field, "--" + err.field.replace("_", "-"))
        raise _Usage(err.named(option)) from None
    from workbench.report import report
    from workbench.sweeps.folder import SweepBusyError
    from workbench.sweeps.plan import NumericsChangedError
    from workbench.sweeps.runner import run_sweep

    with _user_errors():
        try:
            result = run_sweep(
                spec,
                out,
                executor="ray" if on_ray else "local",
                options=options,
                disk_budget=budget,
                retry_failed=a.retry_failed,
            )
        except NumericsChangedError as err:  # what to pass, as the options that set it
            raise _Usage(err.named({k: f"--{k} {{}}" for k in ("threads", "device", "dtype")})) from None
        except (SweepBusyError, ImportError, ConnectionError, RuntimeError) as err:
            raise _Usage(str(err)) from None
    print(f"index:  {out / 'index.parquet'} (runs in {out / 'runs'})")
    if not a.no_report:
        path = report([], out / "report.html", title=f"Sweep {result.sweep_id}", sweep=result, quiet=True)
        print(f"report: {path}  — open it in a web browser (JupyterLab: press 'Trust HTML')")
    return 0


def _threads(a):
    """The torch threads ``--threads`` asks for, checked against this machine's cores, for the command
    (a sweep's ``--threads`` is per worker: its executor sets them)."""
    threads = getattr(a, "threads", None)
    if threads is None or a.command == "sweep":
        return contextlib.nullcontext()
    from workbench.core.numerics import check_threads, torch_threads

    try:
        check_threads(threads, "--threads")
    except (TypeError, ValueError) as err:
        raise _Usage(str(err)) from None
    return torch_threads(threads)


def _quiet(a):
    """The libraries' loading noise hidden for the command unless ``--verbose`` asks for it (commands that
    load no model have no such flag and nothing to hide). In this process only: Ray workers print as
    they do."""
    if not hasattr(a, "verbose"):
        return contextlib.nullcontext()
    from workbench.quiet import quiet_loading

    return quiet_loading(verbose=a.verbose)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # bad arguments: argparse prints usage and exits with 2

    def fail(message: str, code: int = EXIT_USAGE):
        parser.exit(code, f"workbench {args.command}: error: {message}\n")

    handlers = {
        "generate": _generate,
        "report": _report,
        "rerun": _rerun,
        "study": _study,
        "index": _index,
        "sweep": _sweep,
    }
    try:
        with _threads(args), _quiet(args):
            return handlers[args.command](args)
    except _Usage as err:
        fail(str(err))
    except (NotImplementedError, FileNotFoundError) as err:
        fail(str(err))
    except MemoryError as err:  # the pre-flight's refusal names the sizes; a bare one says nothing
        fail(str(err) or "out of memory: ask for less (a smaller size, fewer steps or layers recorded)")
    except KeyboardInterrupt:
        parser.exit(EXIT_INTERRUPTED, "interrupted\n")
    except Exception as err:  # unforeseen: one line rather than a stack trace, which is there on request
        if os.environ.get("WORKBENCH_TRACEBACK"):
            raise
        from workbench.core.errors import first_line

        fail(
            f"{type(err).__name__}: {first_line(err)} (unexpected; run again with WORKBENCH_TRACEBACK=1 to see where)",
            EXIT_ERROR,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
