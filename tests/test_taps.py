"""Taps: functions around a module's forward that leave its output, its other wrappers and PyTorch's
fast call path alone, and that come off in any order."""

import torch

from workbench.core import taps


def linear() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def test_taps_see_the_call_and_leave_its_output_unchanged():
    module, x = linear(), torch.randn(4, 3)
    expected = module(x)
    seen = []
    handles = [
        taps.before(module, lambda m, args, kwargs: seen.append(("before", m, args, kwargs))),
        taps.after(module, lambda m, args, kwargs, out: seen.append(("after", m, args, kwargs, out))),
    ]
    out = module(x)
    assert torch.equal(out, expected)
    assert [s[0] for s in seen] == ["before", "after"]
    assert seen[0][1] is module and seen[0][2][0] is x and seen[0][3] == {}
    assert seen[1][4] is out  # the very output the caller gets
    assert not module._forward_hooks and not module._forward_pre_hooks  # PyTorch's fast path stays
    for handle in handles:
        handle.remove()
    assert "forward" not in vars(module)
    module(x)
    assert len(seen) == 2  # nothing runs once the taps are off


def test_keyword_arguments_reach_the_taps():
    attn = torch.nn.MultiheadAttention(4, 2, batch_first=True)
    q = torch.randn(1, 3, 4)
    seen = {}
    handle = taps.after(attn, lambda m, args, kwargs, out: seen.update(kwargs))
    attn(q, q, q, need_weights=False)
    handle.remove()
    assert seen == {"need_weights": False}


def test_taps_come_off_in_any_order_and_twice():
    module = linear()
    calls = []

    def one(*a):
        calls.append(1)

    first = taps.after(module, one)
    second = taps.after(module, lambda *a: calls.append(2))
    third = taps.after(module, one)  # the same function twice: each handle takes its own off
    module(torch.randn(1, 3))
    assert calls == [1, 2, 1]
    second.remove()  # not in the order they went on
    second.remove()  # a second remove does nothing
    module(torch.randn(1, 3))
    assert calls == [1, 2, 1, 1, 1]
    third.remove()
    module(torch.randn(1, 3))
    assert calls == [1, 2, 1, 1, 1, 1]
    assert "forward" in vars(module)  # one tap is still on
    first.remove()
    assert "forward" not in vars(module)


def test_a_module_another_wrapper_holds_gets_hooks_and_keeps_them_when_the_wrapper_goes():
    """diffusers' hook registry (group offloading, caches) and accelerate put back the forward they saved
    when their hook goes, which would take a tap over it off: such a module gets PyTorch hooks."""
    from diffusers.hooks.hooks import HookRegistry, ModelHook

    module, x = linear(), torch.randn(1, 3)
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(ModelHook(), "theirs")
    calls = []
    before = taps.before(module, lambda *a: calls.append("before"))
    after = taps.after(module, lambda *a: calls.append("after"))
    assert module._forward_pre_hooks and module._forward_hooks  # hooks, not taps
    registry.remove_hook("theirs")  # as group offloading does during the first call
    assert torch.equal(module(x), torch.nn.Linear.forward(module, x))
    assert calls == ["before", "after"]  # still observed
    before.remove()
    after.remove()
    module(x)
    assert calls == ["before", "after"] and not module._forward_hooks and not module._forward_pre_hooks


def test_an_instance_forward_that_was_there_is_left_as_it_was():
    module = linear()
    calls = []

    def wrapper(x):  # another library's wrapper
        calls.append("wrapper")
        return torch.nn.Linear.forward(module, x)

    module.forward = wrapper
    handle = taps.after(module, lambda *a: calls.append("tap"))
    module(torch.randn(1, 3))
    assert calls == ["wrapper", "tap"]
    handle.remove()
    assert module.forward is wrapper and not module._forward_hooks


def test_a_tapped_module_dropped_with_its_taps_on_is_collected():
    import gc
    import weakref

    module = linear()
    handle = taps.after(module, lambda *a: None)  # kept, never removed before the module goes
    gone = weakref.ref(module)
    del module
    gc.collect()
    assert gone() is None
    handle.remove()  # of a module that is gone: nothing to do


def test_a_wrapper_added_after_the_tap_is_left_in_place():
    module, x = linear(), torch.randn(1, 3)
    calls = []
    handle = taps.after(module, lambda *a: calls.append("tap"))
    tapped = module.forward

    def outer(*args):
        calls.append("outer")
        return tapped(*args)

    module.forward = outer  # wrapped again while tapped: removing the tap must not undo this
    handle.remove()
    assert module.forward is outer
    assert torch.equal(module(x), torch.nn.Linear.forward(module, x))
    assert calls == ["outer"]  # the tapped forward left inside now only passes through
    again = taps.after(module, lambda *a: calls.append("again"))
    module(x)
    again.remove()
    assert calls == ["outer", "outer", "again"] and module.forward is outer


def test_a_wrapper_made_with_functools_wraps_over_the_tap_is_not_taken_for_it():
    """diffusers' hook registry and accelerate wrap a forward with ``functools.update_wrapper``, which
    copies the tapped forward's attributes onto their wrapper: it must not be mistaken for the tap."""
    from diffusers.hooks.hooks import HookRegistry, ModelHook

    module, x = linear(), torch.randn(1, 3)
    calls = []
    handle = taps.after(module, lambda *a: calls.append("tap"))
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(ModelHook(), "theirs")  # wraps the tapped forward
    theirs = module.forward
    later = taps.after(module, lambda *a: calls.append("later"))  # a hook now, not a tap under theirs
    assert module._forward_hooks
    handle.remove()
    assert module.forward is theirs  # their wrapper stays
    module(x)
    assert calls == ["later"]
    later.remove()
    registry.remove_hook("theirs")
    assert "forward" in vars(module)  # the tapped forward they saved, now only passing through
    assert torch.equal(module(x), torch.nn.Linear.forward(module, x)) and calls == ["later"]
