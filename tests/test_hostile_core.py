"""Hostile inputs against the core and the command line: a spec builds only schedulers, bounds checked
before any work, memory checked against what the machine has before anything large is allocated,
every call of a recording recorded on its own, calls from other threads locked out, numerics recorded,
damaged model folders refused in one line, a failed run told from an interrupted one."""

import importlib
import json
import shutil
import threading

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from workbench import RecordingPolicy, Request, generate, load_pipeline, record
from workbench.cli import EXIT_FAILED, main
from workbench.core.memory import MemoryPreflightError, available_bytes
from workbench.core.numerics import machine_cores
from workbench.core.request import MAX_PROMPT_CHARS, RequestError, parse_seeds
from workbench.core.tokens import token_table

GENERATE = importlib.import_module("workbench.core.generate")
MEMORY = importlib.import_module("workbench.core.memory")
PROMPT = "a red circle left of a blue square"


def _usage(capsys, args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    last = err.rstrip("\n").rsplit("\n", 1)[-1]  # (after any loading progress bar)
    assert "Traceback" not in err and last.startswith("workbench ")
    return last


def _equal_runs(a, b):
    assert a.config.request == b.config.request
    for name in ("noise", "latents", "x0"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    for layer in a.attention.probs:
        assert torch.equal(a.attention.probs[layer], b.attention.probs[layer]), layer


# ---------------------------------------------------------------- 1. a spec builds schedulers only


@pytest.mark.parametrize(
    ("scheduler", "says"),
    [
        ({"class": "UNet2DConditionModel", "config": {"block_out_channels": [4096] * 4}}, "not a scheduler"),
        ({"class": "AutoencoderKL", "config": {}}, "not a scheduler"),
        ({"class": "DDIMScheduler", "config": {"num_train_timesteps": 10**9}}, "num_train_timesteps"),
        ({"class": "DDIMScheduler", "config": {"num_train_timesteps": -5}}, "num_train_timesteps"),
        ({"class": "DDIMScheduler", "config": {"trained_betas": [0.1] * 20_000}}, "20,000 values"),
        ({"class": "DDIMScheduler", "config": {"beta_start": float("nan")}}, "must be a number, got nan"),
    ],
)
def test_scheduler_specs_build_schedulers_only(scheduler, says):
    with pytest.raises(RequestError, match=says) as info:
        Request(PROMPT, seed=0, scheduler=scheduler)
    assert info.value.field == "scheduler"


def test_scheduler_a_class_cannot_take_is_one_line(tiny_pipe):
    spec = {"class": "DDIMScheduler", "config": {"beta_schedule": "nope"}}
    with pytest.raises(ValueError, match="DDIMScheduler cannot be built from this config"):
        generate(tiny_pipe, PROMPT, seed=0, steps=2, scheduler=spec, progress=False)


# ---------------------------------------------------------------- 2. threads bounded by the cores


def test_threads_bounded_by_the_machine(capsys, tmp_path):
    err = _usage(
        capsys, ["generate", "--prompt", "a", "--seed", "0", "--out", tmp_path / "o", "--threads", "100000"]
    )
    assert f"--threads must be in 1..{machine_cores()}" in err


# ---------------------------------------------------------------- 3. token tables linear, prompts bounded


def test_token_table_is_linear_in_a_long_word(tiny_pipe):
    word = "qzx" * 3000  # one 9,000-character "word" of many sub-word tokens
    table = token_table(tiny_pipe.tokenizer, word, warn=False)
    assert len(table) > 1000  # many tokens, each a row
    size = int(table.memory_usage(deep=True).sum())
    assert size < 200 * len(word), size  # a copy of the word per row would be thousands of times more
    assert table.word.str.len().max() < 100 and "9,000 characters" in table.word.iloc[1]


def test_prompt_length_has_a_limit(capsys, tmp_path):
    with pytest.raises(RequestError, match=f"the limit is {MAX_PROMPT_CHARS:,}") as info:
        Request("x" * (MAX_PROMPT_CHARS + 1), seed=0)
    assert info.value.field == "prompt"
    with pytest.raises(RequestError) as info:
        Request("x", seed=0, negative_prompt="y" * 40_000)
    assert info.value.field == "negative_prompt"
    err = _usage(capsys, ["generate", "--prompt", "x" * 40_000, "--seed", "0", "--out", tmp_path / "o"])
    assert "--prompt is 40,000 characters long" in err


# ---------------------------------------------------------------- 4. memory before any work


def test_size_refused_before_the_noise_is_drawn(tiny_pipe, monkeypatch):
    from workbench.core.adapters import StableDiffusionAdapter

    def no_noise(*args, **kwargs):
        raise AssertionError("the noise was drawn before the memory check")

    monkeypatch.setattr(StableDiffusionAdapter, "draw_noise", no_noise)
    with pytest.raises(MemoryPreflightError, match=r"try \d+x\d+ or smaller"):
        generate(
            tiny_pipe, PROMPT, seed=0, steps=2, height=65536, width=65536, size_limit=None, progress=False
        )


def test_available_memory_is_the_kernels_available_count():
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    expected = int(fields["MemAvailable"].split()[0]) * 1024
    assert abs(available_bytes(torch.device("cpu")) - expected) < 256 * 1024**2  # read moments apart


def test_attention_store_checked_against_memory_before_the_first_step(tiny_pipe, monkeypatch):
    calls = []
    handle = tiny_pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    policy = RecordingPolicy(heads="all", dtype="float32", negative=True, budget_bytes=10**15)
    monkeypatch.setattr(MEMORY, "available_bytes", lambda device: 200_000)  # bytes: less than the store
    try:
        with pytest.raises(MemoryPreflightError, match="the attention store .* record at most"):
            generate(tiny_pipe, PROMPT, seed=0, steps=50, policy=policy, progress=False)
    finally:
        handle.remove()
    assert calls == []  # refused before the denoiser ran once
    monkeypatch.undo()
    assert generate(tiny_pipe, PROMPT, seed=0, steps=2, policy=policy, progress=False).complete


# ---------------------------------------------------------------- 6. one run per call


def test_two_calls_in_one_recording_are_two_runs(tiny_pipe):
    first = generate(tiny_pipe, Request(PROMPT, seed=3, steps=4, guidance_scale=5.0), progress=False)
    second = generate(
        tiny_pipe, Request("a blue square", seed=7, steps=3, guidance_scale=5.0), progress=False
    )
    with record(tiny_pipe, progress=False) as rec:
        for req in (first.config.request, second.config.request):
            tiny_pipe(
                req.prompt,
                num_inference_steps=req.steps,
                guidance_scale=req.guidance_scale,
                generator=torch.Generator().manual_seed(req.seed),
            )
    assert len(rec.runs) == 2
    for got, want in zip(rec.runs, (first, second)):
        assert (
            got.complete
            and got.steps_done == want.config.steps
            and got.latents.shape[0] == want.steps_done + 1
        )
        _equal_runs(got, want)
    assert "set_timesteps" not in vars(tiny_pipe.scheduler) and "step" not in vars(tiny_pipe.scheduler)
    assert not {"check_inputs", "encode_prompt", "prepare_latents"} & set(vars(tiny_pipe))


# ---------------------------------------------------------------- 7. other threads locked out


def test_a_plain_call_from_another_thread_waits(tiny_pipe):
    request = Request(PROMPT, seed=2, steps=6, guidance_scale=5.0)
    expected = generate(tiny_pipe, request, progress=False)

    def plain():
        return tiny_pipe("a blue square", num_inference_steps=4, generator=torch.Generator().manual_seed(1))

    alone = plain().images[0]
    out: dict = {}
    worker = threading.Thread(target=lambda: out.setdefault("image", plain().images[0]))

    def start_other(step, x0, latent):
        if step == 1:
            worker.start()
            worker.join(timeout=1.0)  # it cannot finish while this recording holds the pipeline

    run = generate(tiny_pipe, request, on_step=start_other, progress=False)
    worker.join()
    assert run.complete and run.steps_done == 6
    _equal_runs(run, expected)
    assert np.array_equal(np.asarray(out["image"]), np.asarray(alone))


def test_pipelines_sharing_components_do_not_mix(tiny_pipe):
    twin = StableDiffusionPipeline(**tiny_pipe.components)
    requests = [Request(PROMPT, seed=s, steps=4, guidance_scale=5.0) for s in range(4)]
    expected = [generate(tiny_pipe, r, progress=False) for r in requests]
    got, errors = {}, []

    def work(i):
        try:
            got[i] = generate(tiny_pipe if i % 2 else twin, requests[i], progress=False)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, want in enumerate(expected):
        _equal_runs(got[i], want)


# ---------------------------------------------------------------- 9. numerics are provenance


def test_thread_count_and_numerics_recorded(tiny_pipe):
    run = generate(tiny_pipe, PROMPT, seed=0, steps=1, progress=False)
    numerics = run.config.provenance.numerics
    assert numerics["threads"] == torch.get_num_threads()
    assert numerics["device"] == "cpu" and numerics["dtype"] == "float32"
    assert numerics["attention_backend"] and numerics["versions"]["torch"] == torch.__version__
    assert run.config.to_dict()["numerics"] == numerics  # saved with the run


# ---------------------------------------------------------------- 10, 11. damaged models, failures


def _damaged(tmp_path, tiny_folder, name, damage):
    model = tmp_path / name
    shutil.copytree(tiny_folder, model)
    damage(model)
    return model


def _zero_text_encoder(model):
    (model / "text_encoder" / "model.safetensors").write_bytes(b"")


def _zero_unet(model):
    next((model / "unet").glob("*.safetensors")).write_bytes(b"")


def _string_in_config(model):
    config = json.loads((model / "unet" / "config.json").read_text())
    config["in_channels"] = "four"
    (model / "unet" / "config.json").write_text(json.dumps(config))


def _renamed_weights(model):
    from safetensors.torch import load_file, save_file

    file = next((model / "unet").glob("*.safetensors"))
    save_file({"old." + k: v for k, v in load_file(file).items()}, file)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_zero_text_encoder, "cannot be loaded"),
        (_zero_unet, "cannot be loaded"),
        (_string_in_config, "cannot be loaded"),
        (_renamed_weights, "does not hold 208 of the 208 weights"),
    ],
)
def test_damaged_model_folders_refused_in_one_line(capsys, tmp_path, tiny_folder, damage, says):
    model = _damaged(tmp_path, tiny_folder, damage.__name__, damage)
    with pytest.raises(ValueError, match=says):
        load_pipeline(model, device="cpu")
    err = _usage(
        capsys, ["generate", "--model", model, "--prompt", "a", "--seed", "0", "--out", tmp_path / "o"]
    )
    assert says in err


def test_policy_device_checked_where_it_is_used(tiny_pipe):
    from workbench.core.policy import PolicyError
    from workbench.core.run import RunConfig

    with pytest.raises(PolicyError, match="policy device 'foo' is not a device torch knows") as info:
        RecordingPolicy(device="foo")
    assert info.value.field == "device"
    policy = RecordingPolicy(device="cuda:7")  # a run recorded on a GPU must still load without one
    config = generate(tiny_pipe, PROMPT, seed=0, steps=1, progress=False).config
    back = RunConfig.from_dict({**config.to_dict(), "policy": policy.to_dict()})
    assert back.policy == policy
    with pytest.raises(ValueError, match="policy device 'cuda:7' is not available here"):
        generate(tiny_pipe, PROMPT, seed=0, steps=1, policy=policy, progress=False)


def test_a_call_after_a_failed_call_in_one_recording_runs(tiny_pipe, monkeypatch):
    from workbench.core.adapters import StableDiffusionAdapter

    real = StableDiffusionAdapter.draw_noise

    def broken(*args, **kwargs):
        raise OSError("the noise could not be drawn")

    monkeypatch.setattr(StableDiffusionAdapter, "draw_noise", broken)
    with record(tiny_pipe, progress=False) as rec:
        with pytest.raises(OSError):
            tiny_pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(5))
        monkeypatch.setattr(StableDiffusionAdapter, "draw_noise", real)
        tiny_pipe(
            PROMPT, num_inference_steps=2, guidance_scale=5.0, generator=torch.Generator().manual_seed(5)
        )
    assert rec.runs and rec.runs[-1].complete and rec.runs[-1].steps_done == 2


def test_a_failed_run_is_not_an_interrupt(capsys, tmp_path, tiny_folder):
    out = tmp_path / "failed"
    code = main(
        ["generate", "--model", str(tiny_folder), "--prompt", "a red circle", "--seed", "1"]
        + ["--steps", "6", "--guidance", "1e30", "--out", str(out), "--device", "cpu"]
    )
    err = capsys.readouterr().err
    assert (
        code == EXIT_FAILED and "the run failed" in err and "non-finite" in err and "interrupted" not in err
    )
    assert (out / "run.json").is_file()  # kept for inspection


# ---------------------------------------------------------------- 12. small


def test_size_messages(capsys, tmp_path):
    err = _usage(
        capsys, ["generate", "--prompt", "a", "--seed", "0", "--height", "7", "--out", tmp_path / "o"]
    )
    assert "--height must be a multiple of 8" in err and "try 8" in err and "8 or 8" not in err
    err = _usage(
        capsys, ["generate", "--prompt", "a", "--seed", "0", "--height", "4096", "--out", tmp_path / "o"]
    )
    assert "--width/--height 32x4096 is more than 2x" in err and "pass --no-size-limit" in err
    assert "size_limit=None" not in err


def test_one_parse_seeds_bounded_and_linear():
    assert parse_seeds("0, 5, 10-12") == (0, 5, 10, 11, 12)
    assert len(parse_seeds("0-30000")) == 30001
    with pytest.raises(RequestError, match="name 1,000,000,000,000 seeds; at most 100,000") as info:
        parse_seeds("0-999999999999")
    assert info.value.field == "seeds"
    with pytest.raises(RequestError, match="repeated: 3"):
        parse_seeds([1, 3, 3])


# ---------------------------------------------------------------- the classes behind them


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"solver_order": 600_000_000}, "solver_order must be an int in 1..8"),
        ({"solver_order": 20}, "solver_order must be an int in 1..8"),
        (
            {"lower_order_final": True, "num_train_timesteps": 1000, "trained_betas": [0.5, 0.5]},
            "trained_betas",
        ),
        ({"some_count": 10**12}, "whole numbers there are at most"),
    ],
)
def test_scheduler_configs_bounded_as_a_class(config, says):
    with pytest.raises(RequestError, match=says):
        Request(PROMPT, seed=0, scheduler={"class": "DPMSolverMultistepScheduler", "config": config})


def _scheduler_config(**changes):
    def damage(model):
        file = model / "scheduler" / "scheduler_config.json"
        file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))

    return damage


def _tokenizer_length(model):
    file = model / "tokenizer" / "tokenizer_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "model_max_length": 10**9}))


def _sample_size_text(model):
    file = model / "unet" / "config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "sample_size": "abc"}))


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_scheduler_config(num_train_timesteps=10**9), "num_train_timesteps must be an int in 1..10,000"),
        (_scheduler_config(_class_name="UNet2DConditionModel"), "is not a scheduler"),
        (_scheduler_config(trained_betas=[0.5, 0.5]), "trained_betas holds 2 values"),
        (_tokenizer_length, "model_max_length 1,000,000,000 is beyond the"),
        (_sample_size_text, "cannot"),
    ],
)
def test_model_folder_configs_checked_before_building(tmp_path, tiny_folder, damage, says):
    model = _damaged(tmp_path, tiny_folder, "m", damage)
    with pytest.raises(ValueError, match=says):
        load_pipeline(model, device="cpu")


def test_memory_suggestions_fit_at_once(tiny_pipe):
    import re

    from workbench.core.adapters import adapter_for
    from workbench.core.memory import check_size

    adapter = adapter_for(tiny_pipe)
    for height, width in [(8, 2**30), (2**16, 2**16), (2**27, 8)]:
        with pytest.raises(MemoryPreflightError) as info:
            check_size(adapter, height, width, 1)
        fit_w, fit_h = map(int, re.search(r"try (\d+)x(\d+)", str(info.value)).groups())
        check_size(adapter, fit_h, fit_w, 1)  # what it suggests fits (no second refusal)


def test_a_call_from_inside_a_recorded_call_is_refused(tiny_pipe):
    def inner(pipe, step, timestep, tensors):
        pipe("inner", num_inference_steps=2)
        return tensors

    with pytest.raises(RuntimeError, match="inside a recorded call"):
        with record(tiny_pipe, progress=False):
            tiny_pipe(PROMPT, num_inference_steps=3, callback_on_step_end=inner)
    assert generate(tiny_pipe, PROMPT, seed=0, steps=2, progress=False).complete  # nothing left behind


def test_a_non_finite_image_is_a_failure(capsys, tmp_path, tiny_folder):
    def nan_vae(model):
        file = model / "vae" / "config.json"
        file.write_text(json.dumps({**json.loads(file.read_text()), "scaling_factor": float("nan")}))

    model = _damaged(tmp_path, tiny_folder, "nanvae", nan_vae)
    run = generate(load_pipeline(model, device="cpu"), PROMPT, seed=0, steps=2, progress=False)
    assert run.failure == "the decoded image turned non-finite (NaN or inf)" and run.image is None
    code = main(
        ["generate", "--model", str(model), "--prompt", "a", "--seed", "0", "--steps", "2"]
        + ["--out", str(tmp_path / "o"), "--device", "cpu"]
    )
    assert code == EXIT_FAILED and "decoded image turned non-finite" in capsys.readouterr().err


def test_policy_bounds_and_fields():
    from workbench.core.policy import PolicyError

    with pytest.raises(PolicyError, match="at most 10,000 step indices") as info:
        RecordingPolicy(steps=range(10**12))
    assert info.value.field == "steps"
    with pytest.raises(PolicyError, match="policy foo is not a policy field; fields are .*'heads'"):
        RecordingPolicy.from_dict({"foo": 1})
    with pytest.raises(RequestError, match="rising ranges") as info:
        parse_seeds("0-" + "9" * 5000)
    assert len(str(info.value)) < 200


def test_unforeseen_errors_are_one_line(capsys, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise IndexError("index 999 is out of bounds for dimension 0 with size 2")

    monkeypatch.setattr(GENERATE, "generate", broken)
    with pytest.raises(SystemExit) as info:
        main(["generate", "--prompt", "a", "--seed", "0", "--steps", "2", "--out", str(tmp_path / "o")])
    last = capsys.readouterr().err.rstrip().rsplit("\n", 1)[-1]
    assert info.value.code == 4 and last.startswith("workbench generate: error: IndexError: index 999")
    assert "WORKBENCH_TRACEBACK=1" in last

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(GENERATE, "generate", out_of_memory)
    with pytest.raises(SystemExit):
        main(["generate", "--prompt", "a", "--seed", "0", "--steps", "2", "--out", str(tmp_path / "p")])
    assert capsys.readouterr().err.rstrip().endswith("fewer steps or layers recorded)")
