"""What a model refuses in an edit list for a request, found before any call (a sweep checks its edit
lists this way before it runs anything): the family, the steps, the layers and heads, and every word
(missing from the prompt, or cut off by its text encoder). A replace's pairing with its source is
checked when the source exists, in the call.
"""

from __future__ import annotations

from ..core.adapters import adapter_for
from ..core.edit import Edit
from ..core.errors import FieldError
from ..core.generate import loop_steps
from ..core.request import Request
from .apply import check_family, check_steps
from .plan import call_text, check_words, layer_shapes, placed_layers


def edit_problem(pipe, request: Request, edits: tuple[Edit, ...]) -> str | None:
    """Why ``pipe`` would refuse ``edits`` on ``request``'s call, in one line; None when it would not."""
    try:
        check_on_model(pipe, request, edits)
    except FieldError as err:
        return str(err)
    return None


def check_on_model(pipe, request: Request, edits: tuple[Edit, ...]) -> None:
    """Raise the ``EditError`` (a ``FieldError``) the call would raise for ``edits`` on ``request``."""
    if not edits:
        return
    adapter = adapter_for(pipe)
    check_family(adapter, edits)
    request = request.for_model(adapter)
    total = loop_steps(pipe, request)
    if total is not None:
        check_steps(edits, total)
    text = call_text(adapter, request.prompt, adapter.text_lengths(adapter.call_arguments(request)))
    grids, heads = layer_shapes(adapter, adapter.latent_hw(request.height, request.width))
    for edit in edits:
        if edit.kind != "switch":
            placed_layers(edit, grids, heads)
            check_words(edit, text)
