"""Sweep specs: JSON round trip, deterministic expansion, stable ids, errors that name the field."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from workbench import RecordingPolicy, Request
from workbench.core.request import parse_seeds
from workbench.sweeps.spec import (
    MAX_ORDERS,
    MAX_RUNS,
    SpecError,
    SweepSpec,
    load_spec,
    parse_bytes,
    request_id,
)

SMALLEST = {
    "model": "toy",
    "prompts": ["a red circle left of a blue square"],
    "seeds": [0, 1],
    "steps": 6,
    "guidance_scales": [4.0],
}


def test_smallest_spec_file_round_trips(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(SMALLEST))
    spec = load_spec(path)
    assert spec.model == "toy" and spec.steps == (6,) and spec.guidance_scales == (4.0,)
    assert spec.policy == RecordingPolicy() and spec.sizes == (None,) and spec.schedulers == (None,)
    assert [(r.prompt, r.seed, r.steps, r.guidance_scale) for r in spec.requests()] == [
        ("a red circle left of a blue square", 0, 6, 4.0),
        ("a red circle left of a blue square", 1, 6, 4.0),
    ]
    again = SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    spec.save(tmp_path / "copy.json")
    assert load_spec(tmp_path / "copy.json") == spec


def test_full_spec_round_trips_through_json():
    spec = SweepSpec(
        model="some/folder",
        prompt="a red circle left of a blue square",
        word_orders={"kind": "swap", "words": ["red", "blue"]},
        seeds="0-2, 7",
        steps=[4, 6],
        guidance_scales=[1, 4.0],
        schedulers=[
            "DDIM",
            None,
            {"class": "EulerDiscreteScheduler", "config": {"timestep_spacing": "trailing"}},
        ],
        sizes=[None, 32, [32, 48]],
        negative_prompt="blurry",
        policy={"layers": ["8x8"], "heads": "all", "steps": [0, 2]},
        disk_budget="1.5GB",
        name="demo",
    )
    assert spec.seeds == (0, 1, 2, 7) and spec.guidance_scales == (1.0, 4.0)
    assert spec.schedulers[0] == "ddim" and spec.sizes == (None, (32, 32), (32, 48))
    assert spec.disk_budget == 1_500_000_000 and spec.policy.heads == "all"
    text = json.dumps(spec.to_dict())
    assert SweepSpec.from_dict(json.loads(text)) == spec
    assert len(spec.plan()) == 2 * 4 * 2 * 2 * 3 * 3  # orders × seeds × steps × guidance × schedulers × sizes


def test_expansion_order_and_word_orders():
    spec = SweepSpec(
        model="toy",
        prompts=["a red circle left of a blue square", "a painting of a horse"],
        word_orders="relation",
        seeds=[3, 1],
        guidance_scales=[2.0, 4.0],
    )
    assert spec.prompt_list() == [
        ("a red circle left of a blue square", "a red circle left of a blue square"),
        ("a blue square left of a red circle", "a red circle left of a blue square"),
        ("a painting of a horse", "a painting of a horse"),
        ("a horse of a painting", "a painting of a horse"),
    ]
    plan = spec.plan()
    # seeds outermost, then settings, the prompts innermost: the orders of one seed run together
    assert [(p.request.seed, p.request.guidance_scale, p.prompt_index) for p in plan[:5]] == [
        (3, 2.0, 0),
        (3, 2.0, 1),
        (3, 2.0, 2),
        (3, 2.0, 3),
        (3, 4.0, 0),
    ]
    assert plan == spec.plan() == SweepSpec.from_dict(spec.to_dict()).plan()


def test_request_ids_are_stable_and_cover_request_policy_and_weights():
    request = Request("a red circle", seed=0, steps=6, guidance_scale=4.0)
    w = "ab" * 32
    rid = request_id(request, RecordingPolicy(), w)
    assert rid == request_id(Request.from_dict(request.to_dict()), RecordingPolicy(), w)
    assert len(rid) == 16 and int(rid, 16) >= 0
    assert rid == request_id(request, RecordingPolicy(budget_bytes=123), w)  # the budget keeps nothing
    assert rid != request_id(request.replace(seed=1), RecordingPolicy(), w)
    assert rid != request_id(request, RecordingPolicy(heads="all"), w)
    assert rid != request_id(request, RecordingPolicy(), "cd" * 32)
    ids = [request_id(r, RecordingPolicy(), w) for r in SweepSpec(**SMALLEST).requests()]
    assert len(set(ids)) == len(ids)
    a, b = SweepSpec(**SMALLEST), SweepSpec(**{**SMALLEST, "name": "another name", "disk_budget": "1GB"})
    assert a.sweep_id(w) == b.sweep_id(w) != SweepSpec(**{**SMALLEST, "seeds": [0]}).sweep_id(w)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seed": [0]}, "unknown spec fields ['seed']"),
        ({"model": ""}, "model must name a model"),
        ({"prompts": []}, "needs prompts"),
        ({"prompt": "x"}, "not both"),
        ({"seeds": [0, 0]}, "seeds must be distinct"),
        ({"seeds": "3-1"}, "rising range"),
        ({"seeds": [-1]}, "seeds must be in 0.."),
        ({"steps": 0}, "steps must be in 1..1000"),
        ({"guidance_scales": [-1.0]}, "guidance_scales: guidance_scale must be >= 0"),
        ({"schedulers": ["nope"]}, "schedulers: scheduler 'nope' is not known"),
        ({"sizes": [[32]]}, "sizes entries must be"),
        ({"word_orders": "backwards"}, "word_orders must be one of"),
        ({"word_orders": "of"}, "word_orders for 'a red circle left of a blue square': kind='of' needs"),
        ({"policy": {"heads": "some"}}, "policy: policy heads must be"),
        ({"disk_budget": "lots"}, "disk_budget must be a positive size"),
    ],
)
def test_spec_errors_name_the_field(change, message):
    d = {**SMALLEST, **change}
    if "prompt" in change:
        d["prompts"] = SMALLEST["prompts"]
    if change.get("word_orders") == "of":
        d["prompts"] = ["a red circle left of a blue square", "no relation here"]
    with pytest.raises(SpecError) as err:
        SweepSpec.from_dict(d)
    assert message in str(err.value)


def test_spec_file_errors_name_the_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="bad.json is not a JSON file"):
        load_spec(bad)
    bad.write_text(json.dumps({"model": "toy"}))
    with pytest.raises(SpecError, match="bad.json: a sweep needs prompts"):
        load_spec(bad)


def test_sizes_and_seed_texts():
    assert parse_bytes("10 MiB") == 10 * 1024**2 and parse_bytes(2048) == 2048 and parse_bytes(None) is None
    assert parse_bytes("2gb") == 2 * 10**9
    with pytest.raises(SpecError):
        parse_bytes("-1GB")
    assert parse_seeds("0-3, 9") == (0, 1, 2, 3, 9) and parse_seeds(5) == (5,)


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"prompts": ["x" * 10_001]}, "prompts", "prompts: prompt is 10,001 characters long"),
        ({"negative_prompt": "x" * 10_001}, "negative_prompt", "negative_prompt: negative_prompt is 10,001"),
        ({"steps": 1001}, "steps", "steps: steps must be in 1..1000"),
        (
            {"guidance_scales": [float("inf")]},
            "guidance_scales",
            "guidance_scales: guidance_scale must be a finite number",
        ),
        ({"seeds": [2**63]}, "seeds", "seeds must be in 0.."),
        ({"seeds": "0-999999999999"}, "seeds", "seeds name 1,000,000,000,000 seeds"),
    ],
)
def test_request_errors_name_the_spec_field_as_data(change, field, message):
    with pytest.raises(SpecError) as err:
        SweepSpec.from_dict({**SMALLEST, **change})
    assert err.value.field == field and str(err.value).startswith(message)


def test_guidance_left_out_is_the_models_own_and_an_empty_prompt_is_a_request():
    spec = SweepSpec.from_dict({"model": "toy", "prompts": ["", "a red circle"], "steps": 2})
    assert spec.guidance_scales == (None,) and [r.guidance_scale for r in spec.requests()] == [None, None]
    assert [r.prompt for r in spec.requests()] == ["", "a red circle"]
    assert SweepSpec.from_dict(json.loads(spec.to_json())) == spec


HOSTILE_EXPANSIONS = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))  # a runaway expansion fails, not the machine
from workbench.sweeps.spec import SweepSpec, SpecError

long = " ".join(f"w{{i}}" for i in range(42))
base = {{"model": "toy", "steps": 2}}
made = [
    len(SweepSpec.from_dict({{**base, "prompt": "a red circle", "seeds": "0-99999"}}).plan()),
    len(SweepSpec.from_dict({{**base, "prompts": [f"p {{i}}" for i in range(30000)]}}).plan()),
    len(SweepSpec.from_dict({{**base, "prompt": long, "word_orders": {{"kind": "all", "max_orders": {max_orders}}}}}).plan()),
]
print("made", made)
for change in (
    {{"prompt": long, "seeds": "0-999999999999"}},
    {{"prompt": long, "word_orders": {{"kind": "all", "max_orders": 10**9}}}},
    {{"prompts": [f"p{{i}}" for i in range(11)], "seeds": "0-99999"}},
):
    try:
        SweepSpec.from_dict({{**base, **change}})
    except SpecError as err:
        print("refused", err.field, "|", err)
"""


def test_expansion_is_linear_and_bounded_and_refused_with_the_count():
    script = textwrap.dedent(HOSTILE_EXPANSIONS.format(max_orders=MAX_ORDERS))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    # quadratic duplicate checks took minutes here, an unbounded max_orders for ever: the timeout fails them
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"made [100000, 30000, {MAX_ORDERS}]"
    assert (
        lines[1] == "refused seeds | seeds name 1,000,000,000,000 seeds; at most 100,000 may be given at once"
    )
    assert lines[2].startswith(
        f"refused word_orders | word_orders max_orders must be an int in 1..{MAX_ORDERS}"
    )
    assert lines[3].startswith(
        "refused seeds | the sweep expands to 1,100,000 runs (11 prompts × 100,000 seeds"
    )
    assert f"at most {MAX_RUNS:,} may be planned" in lines[3] and len(lines) == 4


def test_a_spec_over_the_run_bound_is_refused_with_its_count():
    assert MAX_RUNS == 100_000  # planned in a few seconds; a larger study is several sweeps
    with pytest.raises(SpecError) as err:
        SweepSpec.from_dict({**SMALLEST, "prompts": ["a red circle", "a blue square"], "seeds": "0-50000"})
    assert err.value.field == "seeds"
    assert str(err.value).startswith(
        "the sweep expands to 100,002 runs (2 prompts × 50,001 seeds and settings)"
    )
    assert "at most 100,000 may be planned at once" in str(err.value)
