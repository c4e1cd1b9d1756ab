"""The pieces of a recording on an accelerator that can be checked without one: no per-step copy of a
noise level to the device, one copy for the steps' finiteness flags and timesteps, free memory counted
with what the caching allocator holds, and the denoiser's device taken from its input."""

from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from workbench.core import memory, recorder
from workbench.core.schedulers import _level as level
from workbench.core.schedulers import build_scheduler, x0_from_output


class DeviceCopies(TorchDispatchMode):
    """Records every copy of a tensor onto a device other than the CPU."""

    def __init__(self):
        super().__init__()
        self.copies = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.to.device) and device is not None:
            if torch.device(device).type != "cpu":
                self.copies.append(func)
        return func(*args, **kwargs)


SCHED_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)


@pytest.mark.parametrize("name", ["dpm++", "pndm", "unipc"])
def test_x0_takes_the_noise_level_as_a_cpu_number_not_a_copy_per_step(name):
    from diffusers import DDIMScheduler

    scheduler = build_scheduler(name, DDIMScheduler(**SCHED_CONFIG).config)
    scheduler.set_timesteps(4)
    g = torch.Generator().manual_seed(0)
    sample, out = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    t = scheduler.timesteps[0]
    scheduler.step(out, t, sample)
    expected = x0_from_output(scheduler, out, t, sample)  # on the CPU
    on_meta = (sample.to("meta"), out.to("meta"))
    with DeviceCopies() as seen:
        x0 = x0_from_output(scheduler, on_meta[1], t, on_meta[0])
    assert seen.copies == [] and x0.device.type == "meta" and x0.shape == expected.shape
    # a CPU scalar is taken as it is; anything else goes where the sample is
    assert level(torch.tensor(0.5), on_meta[0]).device.type == "cpu"
    assert level(torch.tensor([0.5]), on_meta[0]).device.type == "meta"
    assert level(torch.tensor(0.5, dtype=torch.float64), sample, torch.float32).dtype == torch.float32


def test_finiteness_flags_of_every_step_are_judged_in_one_go():
    flags = [torch.tensor(False), torch.tensor(False), torch.tensor(True), torch.tensor(True)]
    state = SimpleNamespace(on_device=None, nonfinite=list(flags), failure=None)
    recorder.Recording._settle(state)
    assert state.failure == "the latents turned non-finite (NaN or inf) at step 2" and state.nonfinite == []
    kept = SimpleNamespace(on_device=None, nonfinite=[torch.tensor(True)], failure="an earlier failure")
    recorder.Recording._settle(kept)
    assert kept.failure == "an earlier failure"
    fine = SimpleNamespace(on_device=None, nonfinite=[torch.tensor(False)] * 3, failure=None)
    recorder.Recording._settle(fine)
    assert fine.failure is None


def test_timesteps_as_float64_whether_tensors_or_numbers():
    tensors = [torch.tensor(981), torch.tensor(961.5), torch.tensor([941])]
    assert torch.equal(
        recorder._as_float64(tensors), torch.tensor([981.0, 961.5, 941.0], dtype=torch.float64)
    )
    assert torch.equal(recorder._as_float64([981, 0.25]), torch.tensor([981.0, 0.25], dtype=torch.float64))
    assert recorder._as_float64([]).shape == (0,)


def test_cuda_memory_counts_what_the_caching_allocator_holds_unused(monkeypatch):
    gb = 1024**3
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * gb, 80 * gb))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 10 * gb)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 4 * gb)
    assert memory.available_bytes(torch.device("cuda", 0)) == 9 * gb


def test_the_denoisers_device_is_its_inputs():
    module = torch.nn.Linear(2, 2)  # weights on the CPU, as under an offloading hook before it moves them
    assert recorder._input_device((torch.empty(1, device="meta"),), {}, module).type == "meta"
    assert recorder._input_device((), {"sample": torch.empty(1, device="meta")}, module).type == "meta"
    assert recorder._input_device((3,), {"return_dict": False}, module).type == "cpu"
