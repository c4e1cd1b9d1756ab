"""GenerateApp: prompt in, a recorded run out, with a live x0 preview at every step.

Example:
    app = GenerateApp(pipe, prompt="a red circle left of a blue square", seed=3)
    app.guidance.value     # the model's own default guidance until you change it
    app            # in a notebook: shows the app
    run = app.run_sync()   # or click Run
"""

from __future__ import annotations

import random
from collections.abc import Callable

import ipywidgets as W
from PIL import Image

from workbench.analysis.trajectory import decode_latents, filmstrip
from workbench.core.adapters import adapter_for
from workbench.core.generate import generate
from workbench.core.request import Request
from workbench.core.run import Run
from workbench.core.schedulers import SCHEDULERS
from workbench.names import DEFAULT_PROMPT
from workbench.viz.export import Exportable
from workbench.viz.render import display_scale, png_bytes
from workbench.widgets.base import TaskRunner
from workbench.widgets.export import ExportBar

DEFAULT_SCHEDULER = "(model default)"

# Request field -> the label of the box it comes from (the rest are labelled with the field's own name)
LABELS = {
    "negative_prompt": "negative prompt",
    "guidance_scale": "guidance",
    "true_cfg_scale": "true CFG",
    "size": "width/height",
}
HINTS = {"size": "the app keeps this bound; workbench.generate(pipe, request, size_limit=None) lifts it"}


class GenerateApp:
    """Generate one run: inputs, Run/Cancel, progress, live preview, and a step slider afterwards.

    Args:
        pipe: a pipeline from ``load_pipeline``.
        prompt, negative_prompt, seed, steps, scheduler: starting values (an empty prompt runs, with a
            note: the model's unconditional image).
        guidance_scale: the starting guidance; ``None``: the model's own default (its adapter's).
        preview_every: decode the x0 preview every this many steps (1: every step).
    """

    def __init__(
        self,
        pipe,
        *,
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str = "",
        seed: int = 0,
        steps: int = 20,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        preview_every: int = 1,
    ):
        self.pipe = pipe
        self.preview_every = max(1, int(preview_every))
        self.run: Run | None = None
        self._followers: list[Callable[[Run], None]] = []
        self.frames: list = []
        self.strip = None
        adapter = adapter_for(pipe)
        guidance = adapter.default_guidance if guidance_scale is None else guidance_scale
        inputs = self._inputs(adapter, prompt, negative_prompt, seed, steps, guidance, scheduler)
        self.task = TaskRunner("Run", "set the inputs and press Run", labels=LABELS, hints=HINTS)
        # Resized to each image shown (``_show``), so a 48×64 image keeps its shape.
        self.preview = W.Image(format="png", layout=W.Layout(width="256px", height="256px"))
        self.preview.add_class("wb-preview")
        self.preview_label = W.HTML("")
        self.step_slider = W.IntSlider(
            value=0, min=0, max=0, description="step", disabled=True, continuous_update=True
        )
        self.step_slider.layout.display = "none"  # shown with a run's steps, never alone
        self.shown: Image.Image | None = None  # the image in the preview now (what "image PNG" writes)
        self.export = ExportBar(self.exportable, "generate", ("image",))

        self.new_seed.on_click(lambda _: self.draw_seed())
        self.task.run_button.on_click(lambda _: self.start())
        self.step_slider.observe(lambda ch: self.show_step(ch["new"]), names="value")

        self.widget = W.VBox(
            [
                inputs,
                self.task.controls(),
                W.VBox([self.preview_label, self.preview, self.step_slider]),
                self.export.widget,
            ]
        )
        self.widget.add_class("wb-generate")

    def _inputs(self, adapter, prompt, negative_prompt, seed, steps, guidance, scheduler) -> W.VBox:
        """The input boxes (one per request field; size from the model), laid out."""
        native, multiple = adapter.default_size, adapter.size_multiple
        style = {"description_width": "110px"}
        self.prompt = W.Textarea(
            value=prompt, description="prompt", rows=2, layout=W.Layout(width="95%"), style=style
        )
        self.negative_prompt = W.Text(
            value=negative_prompt, description="negative prompt", layout=W.Layout(width="95%"), style=style
        )
        self.seed = W.IntText(value=seed, description="seed", style=style, layout=W.Layout(width="260px"))
        self.new_seed = W.Button(description="new seed", icon="random", layout=W.Layout(width="110px"))
        # Plain number boxes, not bounded ones: a bounded box silently clamps (0 steps became 1); the
        # request checks every value and the app shows what is wrong.
        self.steps = W.IntText(value=steps, description="steps", style=style, layout=W.Layout(width="220px"))
        self.guidance = W.FloatText(
            value=guidance,
            step=0.5,
            description="guidance",
            style=style,
            layout=W.Layout(width="220px"),
        )
        # Flux-family pipelines guide with a second call against the negative prompt ("true CFG"); their
        # guidance box is the embedded guidance. The box starts at the model's own (its folder may declare one).
        self.true_cfg = W.FloatText(
            value=adapter.default_true_cfg,
            step=0.5,
            description="true CFG",
            style=style,
            layout=W.Layout(width="220px", display=None if adapter.true_cfg else "none"),
        )
        self.scheduler = W.Dropdown(
            options=[DEFAULT_SCHEDULER, *SCHEDULERS],
            value=scheduler or DEFAULT_SCHEDULER,
            description="scheduler",
            style=style,
        )
        self.height = W.IntText(
            value=native, step=multiple, description="height", style=style, layout=W.Layout(width="220px")
        )
        self.width = W.IntText(
            value=native, step=multiple, description="width", style=style, layout=W.Layout(width="220px")
        )
        return W.VBox(
            [
                self.prompt,
                self.negative_prompt,
                W.HBox([self.seed, self.new_seed, self.steps, self.guidance, self.true_cfg]),
                W.HBox([self.scheduler, self.height, self.width]),
            ]
        )

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------- handlers (one call each)

    def draw_seed(self) -> int:
        self.seed.value = random.randrange(0, 2**31)
        return self.seed.value

    def start(self, *, threaded: bool = True) -> bool:
        """Start a run with the current inputs; refused (False) while one is going.

        What the app showed of the last run is cleared first: the preview, the status line and the
        step slider describe the new run only.
        """
        if self.task.busy:
            return False
        params = self.params()
        self.run, self.frames, self.strip = None, [], None
        self.step_slider.disabled = True
        self.step_slider.layout.display = "none"
        self.preview.layout.display = "none"
        self.preview_label.value = ""
        self.shown = None
        return self.task.start(
            lambda: self._generate(params),
            max(1, params["steps"]) if isinstance(params["steps"], int) else 1,
            self._finish,
            threaded=threaded,
            status="checking the inputs…",
        )

    def on_run(self, callback: Callable[[Run], None]) -> None:
        """Call ``callback(run)`` with every run the app finishes (an explorer follows the app so)."""
        self._followers.append(callback)

    def params(self) -> dict:
        sched = self.scheduler.value
        return dict(
            prompt=self.prompt.value,
            negative_prompt=self.negative_prompt.value or None,
            seed=self.seed.value,
            steps=self.steps.value,
            guidance_scale=self.guidance.value,
            height=self.height.value,
            width=self.width.value,
            scheduler=None if sched == DEFAULT_SCHEDULER else sched,
            true_cfg_scale=self.true_cfg.value if self.true_cfg.layout.display != "none" else None,
        )

    def show_step(self, step: int) -> None:
        if 0 <= step < len(self.frames) and self.run is not None:
            total = self.run.config.steps
            label = f"x0 predicted at step {step} (steps 0–{total - 1})"
            if not self.run.complete:
                label += f"; the run stopped after {self.run.steps_done} of {total} steps"
            self._show(self.frames[step], label)

    def wait(self, timeout: float | None = None) -> Run | None:
        self.task.wait(timeout)
        return self.run

    def run_sync(self) -> Run | None:
        """Run with the current inputs in the calling thread (notebooks, tests); returns the run or None."""
        self.start(threaded=False)
        return self.run

    @property
    def error(self) -> str | None:
        return self.task.error

    # ------------------------------------------------------------- work

    def _generate(self, params: dict) -> Run:
        # A bad field raises here (its box named by the app); the request's notes (an empty prompt) come
        # from generate as warnings, which the app shows.
        request = Request(**params)
        self.task.status.value = f"generating {request.steps} steps…"
        return generate(
            self.pipe, request, progress=False, cancel=self.task.cancel_event, on_step=self._on_step
        )

    def _on_step(self, step: int, x0, latent) -> None:
        self.task.step()
        if self.task.cancelled:
            return  # the status says the run is stopping; a new preview would say otherwise
        total = self.task.progress.max
        if step % self.preview_every == 0 or step == total - 1:
            image = Image.fromarray(decode_latents(self.pipe, x0[None])[0])
            self._show(image, f"live preview: x0 predicted at step {step} of {total}")
            self.task.status.value = f"generating: step {step + 1} of {total}"

    def _finish(self, run: Run) -> None:
        total = run.config.steps
        if run.steps_done:
            self.task.status.value = f"{run.steps_done} of {total} steps done; decoding the steps…"
        self.strip = filmstrip(self.pipe, run) if run.steps_done else None
        # The decoded x0 of every step (the strip's first frame, the initial noise, left out).
        self.frames = [Image.fromarray(a) for a in self.strip.x0[1:]] if self.strip is not None else []
        self.run = run
        if self.frames:
            self.step_slider.max = len(self.frames) - 1
            self.step_slider.value = len(self.frames) - 1
            self.step_slider.disabled = False
            self.step_slider.layout.display = None
            self.show_step(len(self.frames) - 1)
        if run.image is not None:
            self._show(run.image, f"final image · seed {run.seed} · slide to see x0 at every step")
        if run.complete:
            status = f"done: {total} of {total} steps · seed {run.seed}"
        elif self.task.cancelled:
            status = (
                f"cancelled after {run.steps_done} of {total} steps; the steps done are kept "
                "(the run is marked incomplete)"
            )
        else:
            status = (
                f"stopped after {run.steps_done} of {total} steps (see the warning); the steps done are kept"
            )
        self.task.status.value = status
        for follow in self._followers:
            follow(run)

    def _show(self, image, label: str) -> None:
        """Show ``image`` enlarged by a whole number (about 256 px on its longer side), the box sized to
        it: the image keeps its aspect ratio, during the run and after."""
        scale = display_scale(image)
        self.preview.value = png_bytes(image, scale)
        self.preview.layout.width = f"{image.width * scale}px"
        self.preview.layout.height = f"{image.height * scale}px"
        self.preview.layout.display = None
        self.preview_label.value = label
        self.shown = image

    def exportable(self) -> Exportable:
        """The preview image shown now (the live x0, the chosen step's x0 or the final image), at its
        own pixel size, named by what it is."""
        if self.shown is None:
            return Exportable()
        step = self.step_slider.value if self.run is not None and self.shown is not self.run.image else None
        if self.run is None:
            name = "preview"  # a live preview, mid-run
        else:
            name = f"seed-{self.run.seed}-" + ("final" if step is None else f"x0-step-{step}")
        return Exportable(images={name: self.shown.convert("RGB")})
