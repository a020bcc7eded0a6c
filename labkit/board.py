"""The LabBoard: LlamaFactory's LlamaBoard (`llamafactory-cli webui`) as ipywidgets in a notebook.

    board = LabBoard(output_dir="runs/board")
    board               # the last line of a cell shows its tabs: Configure, Train, Chat, Evaluate, Export

The board holds no logic of its own. Configure spells a model name, a data source and an SFTConfig
(one widget per field, parsed as the command line parses it: labkit.config.flag_options); Train
calls labkit.train.sft.train_sft in a thread, so the notebook stays usable, and its Stop button asks
train_sft to end after the step it is on (StopTraining), with a checkpoint that Resume continues;
Chat generates with labkit.chat; Evaluate calls labkit.evaluation.compare on the base and the
trained model, in a thread too (one job at a time); Export writes the LlamaFactory job
(labkit.llamafactory.export_llamafactory) and the kit's own YAML and data for `labkit train`, which
trains the same weights (tests/test_board.py).
The same calls work without a browser: `board.config()`, `board.start()`, `board.join()`.
"""

from __future__ import annotations

import dataclasses
import html
import json
import threading
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from labkit import config as configs
from labkit.train.sft import SFTConfig, StepInfo, StopTraining, load_for_sft, train_sft

# The fields the Configure tab shows, LlamaBoard's main hyper-parameters; the rest keep their defaults.
FIELDS = ("finetuning_type", "quantization_bit", "lora_rank", "lora_alpha", "learning_rate",
          "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
          "cutoff_len", "lr_scheduler_type", "seed")
EXPLANATIONS = "explanations:"  # a built-in data source: SFT pairs on synthetic patients of a task
# Menus for fields whose type alone would give a text box (LlamaBoard offers none / 8 / 4 too).
CHOICES: dict[str, tuple[Any, ...]] = {"quantization_bit": (None, 8, 4)}


def _look(description: str, tooltip: str) -> dict[str, Any]:
    """Every widget of the Configure tab alike: the description in a column, the box beside it."""
    return {"description": description, "tooltip": tooltip, "style": {"description_width": "210px"},
            "layout": widgets.Layout(width="420px")}


def examples_from(source: str, n: int, seed: int) -> list[dict[str, Any]]:
    """The {"prompt", "answer"} examples of a data source: `explanations:TASK` (a faithful explanation
    of each of n synthetic patients, lesson 09's SFT data) or a JSON Lines file of them (every row, as
    labkit.llamafactory.read_examples reads and checks it; n and seed do not apply)."""
    from labkit.llamafactory import read_examples
    from labkit.pocket.explanations import preference_pairs

    if source.startswith(EXPLANATIONS):
        pairs = preference_pairs(source[len(EXPLANATIONS):], n, seed)
        return [{"prompt": p.prompt, "answer": p.chosen} for p in pairs]
    return read_examples(source)


def loss_curve_svg(history: list[tuple[int, float]], width: int = 420, height: int = 180) -> str:
    """The loss against the step as an inline SVG: one circle (class "loss-point") per step, joined
    by a line; light enough to redraw after every step from the training thread."""
    pad = 36
    if not history:
        empty = f'<text x="{pad}" y="{height // 2}">no steps yet</text>'
        return f'<svg width="{width}" height="{height}">{empty}</svg>'
    steps, losses = [s for s, _ in history], [v for _, v in history]
    low, high = min(losses), max(losses)
    last = max(steps[-1], 2)

    def xy(step: int, loss: float) -> tuple[float, float]:
        x = pad + (step - 1) / (last - 1) * (width - 2 * pad)
        y = pad / 2 + (high - loss) / ((high - low) or 1.0) * (height - 1.5 * pad)
        return round(x, 1), round(y, 1)

    points = [xy(s, v) for s, v in history]
    line = " ".join(f"{x},{y}" for x, y in points)
    dots = "".join(f'<circle class="loss-point" cx="{x}" cy="{y}" r="2.5" fill="#1f77b4"/>'
                   for x, y in points)
    return (f'<svg class="loss-curve" width="{width}" height="{height}" style="font: 11px sans-serif">'
            f'<polyline points="{line}" fill="none" stroke="#1f77b4"/>{dots}'
            f'<text x="2" y="{pad / 2 + 4}">{high:.3f}</text>'
            f'<text x="2" y="{height - pad + 4}">{low:.3f}</text>'
            f'<text x="{width - pad}" y="{height - 4}">step {steps[-1]}</text></svg>')


def field_widget(config_type: type, name: str) -> widgets.Widget:
    """A widget for one config field, with its help as the tooltip: a checkbox for a flag, a menu
    for a choice, else a text box that the command line's own parser reads (`None` included)."""
    field = {f.name: f for f in dataclasses.fields(config_type)}[name]
    kind = typing.get_type_hints(config_type)[name]
    default = field.default
    spec = configs.flag_options(name, kind, default)
    common = _look(name, field.metadata["help"])
    if name in CHOICES:
        return widgets.Dropdown(options=[(str(c), c) for c in CHOICES[name]], value=default, **common)
    if "action" in spec:
        return widgets.Checkbox(value=bool(default), **common)
    if "choices" in spec:
        return widgets.Dropdown(options=[(str(c), c) for c in spec["choices"]], value=default, **common)
    return widgets.Text(value=str(default), **common)


class LabBoard:
    """Configure, train, chat with, evaluate and export a fine-tuning run, in one notebook widget."""

    def __init__(self, model: str = "pocket", data: str = "explanations:pima", examples: int = 32,
                 config: SFTConfig | None = None, output_dir: str | Path = "runs/board") -> None:
        from labkit.evaluation import table_tasks

        start = config or SFTConfig()
        self.output_dir = Path(output_dir)
        self.model_name = widgets.Text(value=model, **_look("model", "a model folder, a hub id, or pocket"))
        self.data = widgets.Combobox(value=data, options=[EXPLANATIONS + t for t in table_tasks()],
                                     **_look("data", "explanations:TASK or a JSON Lines file"))
        self.examples = widgets.IntText(value=examples, **_look(
            "examples", "how many examples a built-in data source draws (a file gives all its rows)"))
        self.fields = {name: field_widget(SFTConfig, name) for name in FIELDS}
        for name, w in self.fields.items():
            w.value = getattr(start, name) if not isinstance(w, widgets.Text) else str(getattr(start, name))
        self._defaults = dataclasses.replace(start, progress=False)  # the fields the board does not show
        self._base: tuple[str, Any] | None = None
        self.trained: Any = None  # the model of the last finished or stopped run
        self.tokenizer: Any = None
        self.run_dir: Path | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._history: list[tuple[int, float]] = []
        self._messages: list[dict[str, str]] = []
        self._build()

    # --- what the tabs drive -------------------------------------------------------------------

    def config(self) -> SFTConfig:
        """The SFTConfig the Configure tab spells (checked as any SFTConfig is)."""
        values: dict[str, Any] = {}
        hints = typing.get_type_hints(SFTConfig)
        for name, w in self.fields.items():
            if isinstance(w, widgets.Text):
                convert = configs.flag_options(name, hints[name], None)["type"]
                values[name] = convert(w.value.strip())
            else:
                values[name] = w.value
        return dataclasses.replace(self._defaults, **values)

    def training_examples(self) -> list[dict[str, Any]]:
        return examples_from(self.data.value, self.examples.value, self.config().seed)

    def start(self, resume: bool = False) -> threading.Thread:
        """Train in a thread with the current settings (a fresh run folder; resume: the last one)."""
        self._require_idle()
        settings = self.config()
        if not resume or self.run_dir is None:
            self.run_dir = self._fresh_run_dir()
        settings.output_dir = self.run_dir
        self._stop.clear()
        return self._in_background(lambda: self._train(settings, resume))

    def stop(self) -> None:
        """Ask the run to end after its current step, with a checkpoint."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the run or the evaluation in progress; raise what it raised."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def chat(self, text: str, max_new_tokens: int = 80) -> str:
        """The current model's greedy reply (the trained one, else the base), the conversation kept."""
        from labkit.chat import generate_replies

        model = self._current_model()
        self._messages.append({"role": "user", "content": text})
        reply = generate_replies(model, self.tokenizer, [self._messages], max_new_tokens)[0]
        self._messages.append({"role": "assistant", "content": reply})
        return reply

    def evaluate(self, suite: Any = None) -> Any:
        """labkit.evaluation.compare of the base model and the trained one (when there is one)."""
        from labkit.evaluation import Suite, compare

        suite = suite or Suite(task=self._task(), fast=True, threads=1, progress=False)
        models = {"base": self._base_model()}
        if self.trained is not None:
            models["trained"] = self.trained
        return compare(models, self.tokenizer, suite)

    def export(self, folder: str | Path | None = None) -> dict[str, Path]:
        """The run as a LlamaFactory job and as a `labkit train` command: YAML files, data, commands."""
        from labkit.llamafactory import export_llamafactory

        out = Path(folder) if folder is not None else self.output_dir / "export"
        settings, examples = self.config(), self.training_examples()
        job = export_llamafactory(settings, examples, self.model_name.value, out / "llamafactory")
        out.mkdir(parents=True, exist_ok=True)
        data = out / "kit_sft.jsonl"
        rows = "".join(json.dumps(e) + "\n" for e in examples)
        data.write_text(rows, encoding="utf-8")
        kit_yaml = configs.write_yaml(settings, out / "kit_sft.yaml", "labkit train --config this file; "
                                      "written by the LabBoard's Export tab")
        command = (f"labkit train --config {kit_yaml} --data {data} --model {self.model_name.value} "
                   f"--out {out / 'run'}")
        (out / "commands.sh").write_text(f"{command}\n{job.command}\n", encoding="utf-8")
        return {"llamafactory_yaml": job.paths[0], "kit_yaml": kit_yaml, "data": data,
                "commands": out / "commands.sh"}

    # --- the background jobs: a run, an evaluation ------------------------------------------------

    def _require_idle(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the board is busy with a run or an evaluation: stop it or wait for it "
                               "(board.join())")

    def _in_background(self, job: Callable[[], None]) -> threading.Thread:
        """One job at a time, in a thread: the notebook stays usable while it runs."""
        self._require_idle()
        self.error = None
        self._thread = threading.Thread(target=job, daemon=True)
        self._thread.start()
        return self._thread

    def _fresh_run_dir(self) -> Path:
        taken = {p.name for p in self.output_dir.glob("run-*")} if self.output_dir.is_dir() else set()
        k = 1
        while f"run-{k}" in taken:
            k += 1
        return self.output_dir / f"run-{k}"

    def _train(self, settings: SFTConfig, resume: bool) -> None:
        try:
            self._set_running(True, f"loading {self.model_name.value} ...")
            model, self.tokenizer = load_for_sft(self.model_name.value, settings)
            examples = self.training_examples()
            if not resume:
                self._history = []
            self.result = train_sft(model, self.tokenizer, examples, settings, resume=resume,
                                    callbacks=[self._on_step])
            self.trained = self.result.model
            verb = "stopped" if self.result.stopped else "done"
            self._set_running(False, f"{verb}: {self.result.summary()} - checkpoint {self.result.checkpoint}")
        except BaseException as err:  # shown on the board and raised again by join()
            self.error = err
            self._set_running(False, f'<span style="color:#b00">failed: {html.escape(repr(err))}</span>')

    def _on_step(self, info: StepInfo) -> None:
        self._history.append((info.step, info.loss))
        self.progress.max, self.progress.value = info.total_steps, info.step
        self.loss_curve.value = loss_curve_svg(self._history)
        self.status.value = (f"step {info.step}/{info.total_steps} · loss {info.loss:.4f} · "
                             f"{info.tokens_per_second:,.0f} tokens/s · "
                             f"peak memory {info.peak_memory_mib:,.0f} MiB")
        if self._stop.is_set():
            raise StopTraining

    def _set_running(self, running: bool, message: str) -> None:
        self.train_button.disabled = self.resume_button.disabled = self.evaluate_button.disabled = running
        self.stop_button.disabled = not running
        self.status.value = message
        if not running:
            self.resume_button.disabled = not (self.result is not None and self.result.stopped)

    def _current_model(self) -> Any:
        return self.trained if self.trained is not None else self._base_model()

    def _base_model(self) -> Any:
        """The untrained model, loaded once per model name (self.tokenizer with it)."""
        name = self.model_name.value
        if self._base is None or self._base[0] != name:
            model, self.tokenizer = load_for_sft(name, self.config())
            self._base = (name, model)
        return self._base[1]

    def _task(self) -> str:
        source = self.data.value
        return source[len(EXPLANATIONS):] if source.startswith(EXPLANATIONS) else "pima"

    # --- the widgets ---------------------------------------------------------------------------

    def _build(self) -> None:
        self.train_button = widgets.Button(description="Train", button_style="success")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", disabled=True)
        self.resume_button = widgets.Button(description="Resume", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="steps")
        self.status = widgets.HTML("not started")
        self.loss_curve = widgets.HTML(loss_curve_svg([]))
        self.message = widgets.Text(placeholder="Ask the model ...", description="you")
        self.send_button = widgets.Button(description="Send")
        self.transcript = widgets.HTML("")
        self.evaluate_button = widgets.Button(description="Evaluate")
        self.evaluation = widgets.HTML("")
        self.export_button = widgets.Button(description="Export")
        self.exported = widgets.HTML("")
        self.train_button.on_click(lambda _: self._guarded(self.start))
        self.resume_button.on_click(lambda _: self._guarded(lambda: self.start(resume=True)))
        self.stop_button.on_click(lambda _: self.stop())
        self.send_button.on_click(lambda _: self._guarded(self._send, self.transcript))
        self.evaluate_button.on_click(lambda _: self._guarded(self._show_evaluation, self.evaluation))
        self.export_button.on_click(lambda _: self._guarded(self._show_export, self.exported))
        configure = widgets.VBox([self.model_name, self.data, self.examples, *self.fields.values()])
        train = widgets.VBox([widgets.HBox([self.train_button, self.stop_button, self.resume_button]),
                              self.progress, self.status, self.loss_curve])
        chat = widgets.VBox([widgets.HBox([self.message, self.send_button]), self.transcript])
        tabs = [("Configure", configure), ("Train", train), ("Chat", chat),
                ("Evaluate", widgets.VBox([self.evaluate_button, self.evaluation])),
                ("Export", widgets.VBox([self.export_button, self.exported]))]
        self.widget = widgets.Tab(children=[t for _, t in tabs], titles=[name for name, _ in tabs])

    def _guarded(self, action: Callable[[], Any], where: widgets.HTML | None = None) -> None:
        """A button's action; its error is shown on the board (a notebook swallows a callback's)."""
        try:
            action()
        except Exception as err:
            (where or self.status).value = f'<span style="color:#b00">{html.escape(str(err))}</span>'

    def _send(self) -> None:
        text = self.message.value.strip()
        if not text:
            return
        self.chat(text)
        self.message.value = ""
        self.transcript.value = "".join(
            f'<p class="chat-{m["role"]}"><b>{m["role"]}:</b> {html.escape(m["content"])}</p>'
            for m in self._messages)

    def _show_evaluation(self) -> None:
        self._in_background(self._evaluation_job)

    def _evaluation_job(self) -> None:
        self.evaluate_button.disabled = True
        self.evaluation.value = "evaluating ..."
        try:
            self.evaluation.value = self.evaluate().to_html(float_format=lambda v: f"{v:.3f}")
        except Exception as err:  # shown on the board and raised again by join()
            self.error = err
            self.evaluation.value = f'<span style="color:#b00">{html.escape(str(err))}</span>'
        finally:
            self.evaluate_button.disabled = False

    def _show_export(self) -> None:
        files = self.export()
        commands = files["commands"].read_text(encoding="utf-8")
        yaml_text = files["llamafactory_yaml"].read_text(encoding="utf-8")
        self.exported.value = (
            "<p>wrote " + ", ".join(f"<code>{html.escape(str(p))}</code>" for p in files.values()) + "</p>"
            f'<pre class="export-commands">{html.escape(commands)}</pre>'
            f'<pre class="export-yaml">{html.escape(yaml_text)}</pre>')

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
