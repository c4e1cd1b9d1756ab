"""Command-line user errors: one line on stderr, exit 2, found before any model loads; Ctrl-C saves
the incomplete run and exits 130; the help builds without torch and shows every default."""

import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from workbench import load_run
from workbench.cli import _parser, main
from workbench.names import DEFAULT_PROMPT as STUDY_PROMPT

GENERATE = importlib.import_module("workbench.core.generate")  # the module (the package exports a function)
LOADING = importlib.import_module("workbench.core.loading")
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _fail(*args, **kwargs):
    raise AssertionError("reached work the checks should have refused first")


def _usage_error(capsys, args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("workbench ")
    return err


@pytest.fixture
def no_loading(monkeypatch):
    monkeypatch.setattr(LOADING, "load_pipeline", _fail)
    monkeypatch.setattr(GENERATE, "generate", _fail)


@pytest.fixture
def no_generating(monkeypatch):
    monkeypatch.setattr(GENERATE, "generate", _fail)


def _generate(out, *extra):
    return ["generate", "--prompt", "a red circle", "--seed", "1", "--steps", "2", "--out", out, *extra]


def test_unknown_device(capsys, tmp_path, no_loading):
    err = _usage_error(capsys, _generate(tmp_path / "o", "--device", "foo"))
    assert "--device 'foo' is not a device torch knows" in err


def test_missing_cuda(capsys, tmp_path, no_loading, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _usage_error(capsys, _generate(tmp_path / "o", "--device", "cuda"))
    assert "--device 'cuda' is not available here" in err and "use 'cpu'" in err
    err = _usage_error(capsys, ["rerun", tmp_path / "spec.json", "--device", "cuda"])  # spec checked first
    assert "does not exist" in err


def test_rerun_device_checked_before_loading(capsys, tmp_path, monkeypatch, tiny_pipe):
    from workbench.store.recipe import save_recipe

    run = GENERATE.generate(tiny_pipe, "a red circle", seed=0, steps=1, progress=False)
    spec = save_recipe(run, tmp_path / "spec.json")
    monkeypatch.setattr(LOADING, "load_pipeline", _fail)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _usage_error(capsys, ["rerun", spec, "--device", "cuda:1"])
    assert "--device 'cuda:1' is not available here" in err


def test_pickled_weights_folder(capsys, tmp_path, tiny_folder, no_generating):
    model = tmp_path / "bin"
    shutil.copytree(tiny_folder, model)
    for weights in model.rglob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    err = _usage_error(capsys, _generate(tmp_path / "o", "--model", model, "--device", "cpu"))
    assert "holds only pickled weights" in err and "safetensors" in err


def test_model_index_without_class_name(capsys, tmp_path, tiny_folder, no_generating):
    model = tmp_path / "m"
    shutil.copytree(tiny_folder, model)
    index = json.loads((model / "model_index.json").read_text())
    del index["_class_name"]
    (model / "model_index.json").write_text(json.dumps(index))
    err = _usage_error(capsys, _generate(tmp_path / "o", "--model", model, "--device", "cpu"))
    assert "_class_name" in err


@pytest.mark.parametrize(
    ("model", "message"), [("", "--model must name a model"), ("./nope", "no such folder")]
)
def test_bad_model_sources(capsys, tmp_path, no_generating, model, message):
    err = _usage_error(capsys, _generate(tmp_path / "o", "--model", model, "--device", "cpu"))
    assert message in err


def test_out_under_a_file(capsys, tmp_path, no_loading):
    (tmp_path / "file").write_text("x")
    err = _usage_error(capsys, _generate(tmp_path / "file" / "run"))
    assert "is a file, not a folder" in err


def _read_only_folder(tmp_path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o555)
        return folder
    try:  # root writes through permission bits; a read-only file system still refuses it
        os.rmdir(tempfile.mkdtemp(dir="/sys"))
    except OSError:
        return Path("/sys")
    pytest.skip("no read-only folder to try")


def test_out_in_a_read_only_folder(capsys, tmp_path, no_loading):
    folder = _read_only_folder(tmp_path)
    err = _usage_error(capsys, _generate(folder / "run"))
    assert f"cannot write in {folder}" in err


def test_report_to_a_folder(capsys, tmp_path):
    err = _usage_error(capsys, ["report", tmp_path / "missing-run", "-o", tmp_path])
    assert f"-o {tmp_path} is a folder" in err and "report.html" in err


def test_study_out_is_a_file(capsys, tmp_path, monkeypatch):
    import workbench.study

    monkeypatch.setattr(workbench.study, "run_study", _fail)
    (tmp_path / "file").write_text("x")
    err = _usage_error(capsys, ["study", "--out", tmp_path / "file"])
    assert "--out" in err and "is a file" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt", "x" * 10_001], "--prompt is 10,001 characters long; the limit is 10,000"),
        (["--prompt", ""], "no word-order swap found for --prompt ''"),
        (["--swapped", "x" * 10_001], "--swapped is 10,001 characters long"),
        (["--prompt", "a horse"], "no word-order swap found for --prompt 'a horse'"),
    ],
)
def test_study_prompt_errors(capsys, tmp_path, monkeypatch, extra, message):
    import workbench.study

    monkeypatch.setattr(workbench.study, "run_study", _fail)
    err = _usage_error(capsys, ["study", "--out", tmp_path / "s", *extra])
    assert message in err and "swapped=" not in err


def test_study_defaults(tmp_path, monkeypatch):
    import workbench.study

    seen = {}
    monkeypatch.setattr(workbench.study, "run_study", lambda out, **kw: seen.update(kw))
    assert main(["study", "--out", str(tmp_path / "s"), "--seeds", "1", "1", "2"]) == 0
    assert seen["prompt"] == workbench.study.DEFAULT_PROMPT == STUDY_PROMPT
    # guidance: the model's own (4.0 for the embedded model), filled in when the study's requests run
    assert seen["swapped"] is None and seen["seeds"] == (1, 2) and seen["guidance_scale"] is None


def test_ctrl_c_saves_the_incomplete_run_and_exits_130(capsys, tmp_path, tiny_folder, monkeypatch):
    real = GENERATE.generate

    def interrupted(pipe, request, **kwargs):
        def ctrl_c(step, x0, latent):
            if step == 1:
                raise KeyboardInterrupt

        return real(pipe, request, on_step=ctrl_c, **kwargs)

    monkeypatch.setattr(GENERATE, "generate", interrupted)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="incomplete"):
        code = main(
            ["generate", "--model", str(tiny_folder), "--prompt", "a red circle", "--seed", "1"]
            + ["--steps", "4", "--device", "cpu", "--out", str(out)]
        )
    assert code == 130
    err = capsys.readouterr().err
    assert f"interrupted after 2 of 4 steps; the incomplete run is saved in {out}" in err
    run = load_run(out)
    assert not run.complete and run.steps_done == 2
    assert json.loads((out / "spec.json").read_text())["complete"] is False


def test_a_real_sigint_saves_and_exits_130(tmp_path, tiny_folder):
    out = tmp_path / "run"
    args = ["generate", "--model", str(tiny_folder), "--prompt", "a red circle", "--seed", "1"]
    # many steps: recording is fast enough that a short run can end before the signal arrives
    args += ["--steps", "900", "--width", "32", "--height", "32", "--device", "cpu", "--threads", "1"]
    args += ["--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Ctrl-C as a terminal delivers it: a child started with SIGINT ignored (a disposition a
        # process inherits from whatever launched the test session) would never see it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = b""
    deadline = time.monotonic() + 120
    while not re.search(rb"denoising: .*\| *[1-9][0-9]*/900", seen):  # some steps are done
        assert time.monotonic() < deadline and proc.poll() is None, seen.decode(errors="replace")
        seen += os.read(proc.stderr.fileno(), 4096)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = (seen + err).decode(errors="replace")
    assert proc.returncode == 130, err
    assert "the incomplete run is saved in" in err and "Traceback" not in err
    run = load_run(out)
    assert not run.complete and 0 < run.steps_done < 900


def test_help_imports_no_torch():
    code = (
        "import sys\n"
        "from workbench.cli import main\n"
        "for args in ([], ['generate'], ['report'], ['rerun'], ['study'], ['index']):\n"
        "    try:\n"
        "        main([*args, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'pandas', 'workbench.core') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "--guidance" in proc.stdout


def test_every_option_has_help_and_shows_its_default():
    parser = _parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, command in commands.items():
        text = " ".join(command.format_help().split())
        for action in command._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.dest} has no help"
            if action.required or action.default is False or not action.option_strings:
                continue
            if action.default is None:
                assert "default" in action.help, f"{name} {action.dest} does not say what its default is"
            else:
                assert f"(default: {action.default})" in text, f"{name} {action.dest}"
    guidance = " ".join(commands["generate"].format_help().split())
    assert "default: the model's own (4.0 for the embedded model" in guidance and "7.5" in guidance


def test_scheduler_names_are_one_table():
    from workbench.core.schedulers import SCHEDULERS
    from workbench.names import SCHEDULERS as NAMES

    assert SCHEDULERS is NAMES


def test_index_names_damaged_folders_in_one_line(capsys, tmp_path, tiny_pipe):
    from workbench import generate, save_run

    save_run(generate(tiny_pipe, "a red circle", seed=0, steps=1, progress=False), tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("[]")
    assert main(["index", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "(1 runs)" in captured.out
    assert captured.err.startswith("workbench index: warning: the index leaves out 1 damaged run folder")
    assert str(tmp_path / "bad" / "run.json") in captured.err and captured.err.count("\n") == 1


@pytest.mark.parametrize(
    "given, says",
    [
        ("[{", "--edits is not JSON"),
        ('"ablate red"', "--edits must be a JSON list of edits, got str"),
        ('[{"kind": "ablate"}]', "--edits[0]: edit words"),
        ('[{"kind": "nope", "words": ["red"]}]', "--edits[0]: edit kind"),
    ],
)
def test_bad_edits_are_refused_before_the_model_loads(capsys, tmp_path, no_loading, given, says):
    err = _usage_error(capsys, _generate(tmp_path / "o", "--edits", given))
    assert says in err, err
