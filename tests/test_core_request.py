"""The request value: validated once, with messages naming the field; a JSON round trip; model sizes."""

import json

import pytest
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from workbench import Request, generate
from workbench.core.adapters import adapter_for
from workbench.core.schedulers import build_scheduler


@pytest.mark.parametrize(
    "fields, exc, pattern",
    [
        ({"steps": 0}, ValueError, "steps must be in 1..1000"),
        ({"steps": 2.5}, TypeError, "steps must be an int"),
        ({"seed": -1}, ValueError, "seed must be in 0.."),
        ({"seed": True}, TypeError, "seed must be an int"),
        ({"guidance_scale": float("inf")}, ValueError, "guidance_scale must be a finite number"),
        ({"guidance_scale": float("nan")}, ValueError, "guidance_scale must be a finite number"),
        ({"guidance_scale": -0.5}, ValueError, "guidance_scale must be >= 0"),
        ({"height": 0}, ValueError, "height must be >= 1"),
        ({"negative_prompt": 3}, TypeError, "negative_prompt must be a str"),
        ({"scheduler": "heun-magic"}, ValueError, "scheduler 'heun-magic' is not known"),
        ({"scheduler": {"class": "DDIMScheduler"}}, ValueError, "scheduler spec dict"),
        ({"scheduler": 3}, TypeError, "scheduler must be a name"),
    ],
)
def test_bad_fields(fields, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Request(**{"prompt": "a red circle", "seed": 1, **fields})


def test_prompt_must_be_text():
    with pytest.raises(TypeError, match="prompt must be a str, got list"):
        Request(["a", "b"], seed=1)


def test_json_round_trip():
    req = Request("a red circle", seed=3, steps=7, guidance_scale=4, negative_prompt="blue", scheduler="DDIM")
    assert req.scheduler == "ddim" and req.guidance_scale == 4.0 and isinstance(req.guidance_scale, float)
    back = Request.from_dict(json.loads(json.dumps(req.to_dict())))
    assert back == req
    inst = Request("x", seed=None, scheduler=EulerDiscreteScheduler(num_train_timesteps=500))
    spec = json.loads(json.dumps(inst.to_dict()))["scheduler"]
    assert spec["class"] == "EulerDiscreteScheduler" and spec["config"]["num_train_timesteps"] == 500
    assert Request.from_dict(json.loads(json.dumps(inst.to_dict()))) == inst
    with pytest.raises(ValueError, match="colour is not a request field"):
        Request.from_dict({**req.to_dict(), "colour": "red"})


def test_scheduler_spec_rebuilds_the_same_scheduler():
    base = DDIMScheduler(num_train_timesteps=1000).config
    made = EulerDiscreteScheduler.from_config(base, timestep_spacing="trailing")
    again = build_scheduler(Request("x", seed=0, scheduler=made).scheduler, base)
    public = {k: v for k, v in made.config.items() if not k.startswith("_")}
    assert type(again) is EulerDiscreteScheduler and public.items() <= dict(again.config).items()
    assert again.config.timestep_spacing == "trailing"  # not reset by the base's list of defaults
    assert build_scheduler(None, base) is None


def test_model_sizes(tiny_pipe):
    adapter = adapter_for(tiny_pipe)
    req = Request("x", seed=0).for_model(adapter)
    assert (req.height, req.width) == (adapter.default_size, adapter.default_size) == (16, 16)
    with pytest.raises(
        ValueError, match="width must be a multiple of 8 for this model, got 20; try 16 or 24"
    ):
        Request("x", seed=0, width=20).for_model(adapter)


def test_generate_takes_a_request_and_keeps_it(tiny_pipe):
    req = Request("a red circle", seed=5, steps=3, guidance_scale=3.0, scheduler="euler")
    run = generate(tiny_pipe, req, progress=False)
    assert run.config.request == req.replace(
        height=16, width=16, true_cfg_scale=1.0
    )  # the defaults filled in
    assert run.config.scheduler == "EulerDiscreteScheduler"  # the class that ran
    same = generate(
        tiny_pipe, "a red circle", seed=5, steps=3, guidance_scale=3.0, scheduler="euler", progress=False
    )
    assert same.config.request == run.config.request
    assert (same.latents == run.latents).all()
    other = generate(tiny_pipe, req, seed=6, progress=False)  # keywords replace a request's fields
    assert other.seed == 6 and not (other.noise == run.noise).all()
    with pytest.raises(TypeError, match="generate needs seed="):
        generate(tiny_pipe, "a red circle", steps=3, progress=False)
