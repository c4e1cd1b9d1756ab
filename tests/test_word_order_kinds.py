"""A word-order kind that does not fit a prompt is refused, naming the kinds that do; sweeps say so
under ``word_orders``."""

import json

import pytest

from workbench.analysis.word_order import fitting_kinds, permutations
from workbench.cli import main
from workbench.sweeps.spec import SpecError, SweepSpec

RELATION = "a red circle left of a blue square"


@pytest.mark.parametrize(
    ("prompt", "kinds"),
    [
        (RELATION, ("all", "swap", "relation")),
        ("a sketch of a red circle left of a blue square", ("all", "swap", "relation")),
        ("a painting of a horse", ("all", "swap", "of", "relation")),
        ("a red circle", ("all", "swap")),
        ("red", ()),
    ],
)
def test_fitting_kinds(prompt, kinds):
    assert fitting_kinds(prompt) == kinds


def test_of_is_refused_where_of_belongs_to_another_relation():
    with pytest.raises(ValueError) as caught:
        permutations(RELATION, kind="of")
    message = str(caught.value)
    assert "its relation word is 'left of'" in message
    assert "kinds that fit this prompt: ['all', 'swap', 'relation']" in message
    # the other kinds still give the orders that make sense
    assert permutations(RELATION, kind="relation")[1] == "a blue square left of a red circle"
    assert permutations("a sketch of a blue square", kind="of") == [
        "a sketch of a blue square",
        "a blue square of a sketch",
    ]


def test_a_prompt_without_of_and_a_single_word():
    with pytest.raises(
        ValueError, match=r"got 'a red circle'; kinds that fit this prompt: \['all', 'swap'\]"
    ):
        permutations("a red circle", kind="of")
    with pytest.raises(ValueError, match="kinds that fit this prompt: none"):
        permutations("red", kind="of")


def test_a_sweep_names_word_orders_and_the_kinds_that_fit():
    spec = {"model": "toy", "prompts": ["a painting of a horse", RELATION], "word_orders": "of", "steps": 6}
    with pytest.raises(SpecError) as caught:
        SweepSpec.from_dict(spec)
    assert caught.value.field == "word_orders"
    assert str(caught.value).startswith(f"word_orders for {RELATION!r}: ")
    assert "kinds that fit this prompt: ['all', 'swap', 'relation']" in str(caught.value)


def test_the_sweep_command_refuses_it_in_one_line(tmp_path, capsys):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"model": "toy", "prompt": RELATION, "word_orders": "of", "steps": 6}))
    with pytest.raises(SystemExit) as caught:
        main(["sweep", str(path), "--out", str(tmp_path / "out")])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"workbench sweep: error: {path}: word_orders for {RELATION!r}: ")
    assert err.count("\n") == 1
    assert "['all', 'swap', 'relation']" in err and not (tmp_path / "out").exists()
