"""Evaluation of a chat LLM on one suite: multiple choice, generated answers, calibration (issue #16).

    suite = Suite(task="pima", seed=0)        # Suite(fast=True): a few dozen items, in seconds
    evaluate(model, tokenizer, suite)                            # one tidy table
    compare({"base": base, "sft": sft, "dpo": dpo}, tokenizer, suite)   # a column per model

`evaluate` returns one row per (benchmark, metric), columns benchmark, metric, value, n (the items
the benchmark asked); `compare` has the same rows with a column of values per model. Same suite,
same numbers: every draw comes from the suite's seed and every answer is greedy (or no answer is
generated at all). The benchmarks, each with its metrics:

    multiple_choice         rule questions scored by log-likelihood: accuracy, accuracy_norm, chance
    explanations            "Which findings in this record point to ...?" answered by greedy generation
                            and scored against the record's faithful explanation: bleu, rouge1, rouge2,
                            rougeL, and the faithfulness precision and recall of labkit.pocket.explanations
    calibration_verbalized  SERVAL's probability prompt; the number the model writes, parsed
    calibration_token       the Yes/No prompt; P(Yes) / (P(Yes) + P(No)) at the answer position
                            (both calibration benchmarks: ece, auc, brier, accuracy at 0.5, answered,
                            parse_failures)

Multiple choice, lm-evaluation-harness's way. A question is asked once per option: the option is the
assistant's whole answer (its end-of-turn token included, so an option that would need more words
does not win by stopping early), and its score is log p(option | question), summed over its tokens.
The model "answers" the option it finds likeliest: `accuracy` by the summed log-likelihood,
`accuracy_norm` by the log-likelihood per character (long options pay for their length). Nothing
is generated and nothing is parsed, so a model that cannot follow a format is still measured.
`rule_questions` builds the questions from the knowledge files: a synthetic patient's record and
"which one finding points to the condition?", with the strongest rule that holds against rules that
do not. That wording is not in the pocket LLM's corpus or back-tuning data (they ask "Which findings
in this record point to ...?", for every finding at once).

Generated answers (`generation_scores`). BLEU is sacrebleu's corpus BLEU on sacrebleu's own 0-100
scale (its defaults: 13a tokenization, case kept, exponential smoothing; n-gram matches summed over
the corpus before the precisions are taken, not a mean of sentence BLEUs). ROUGE-1, ROUGE-2 and
ROUGE-L are rouge-score's F-measures on its 0-1 scale, one per answer, averaged: the text is
lower-cased and split on every character but a-z and 0-9, words longer than 3 letters are Porter-
stemmed (`stem=False` turns that off), and ROUGE-L takes the longest common subsequence of the
whole answer (no sentence split). An empty answer scores 0.

Calibration (`calibration_scores`) uses labkit.metrics' ECE (equal-width bins), AUC and Brier. An
answer that states no single probability (labkit.annotate.parse) is a parse failure: counted in
the row parse_failures, never dropped silently; ECE, AUC, Brier and accuracy are computed on the
answered records (the row answered). AUC is NaN when those hold one class only, every metric NaN
when none is answered.

Which records. Questions and explanations are asked about synthetic patients
(labkit.pocket.patients) drawn from the seed sequence (STREAM, seed, k). The kit's training
recipes seed with a single integer (the corpus, SFT demonstrations, DPO and GRPO prompts), so these
are never the records a model was trained on. Calibration needs true labels: it asks about
n_records records of the task's validation split (labkit.data.load(task), the kit's split), drawn
by the same seed. The test split is never read.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from labkit.chat import CausalLM, pad_token_id
from labkit.config import option, require, settings
from labkit.data import SCHEMAS, to_text
from labkit.hardware import seeded

if TYPE_CHECKING:
    from labkit.pocket.explanations import HeldOut

WHICH_ONE = "Which one of the findings in this record points to {condition}?"
BENCHMARKS: tuple[str, ...] = ("multiple_choice", "explanations", "calibration_verbalized",
                               "calibration_token")
# Suite(fast=True) caps the sizes at these: every benchmark in seconds, for a check, not a figure.
FAST_SIZES: dict[str, int] = {"n_questions": 16, "n_explanations": 16, "n_records": 32}
COLUMNS: tuple[str, ...] = ("benchmark", "metric", "value", "n")
ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL")
# The first entry of every seed sequence drawn here (issue #16). The kit's training recipes seed
# their generators with one integer, a different stream, so no evaluated record is a trained one.
STREAM = 16


@dataclass(frozen=True)
class Question:
    """A multiple-choice question: a prompt, its options, the index of the right one."""

    prompt: str
    options: tuple[str, ...]
    answer: int
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.options) < 2 or not 0 <= self.answer < len(self.options):
            raise ValueError(f"question from {self.source or 'an unnamed source'}: {len(self.options)} "
                             f"options and answer {self.answer}; give at least 2 options and an answer "
                             "index among them")


@dataclass(frozen=True)
class MultipleChoiceResult:
    """Accuracy by summed and by per-character log-likelihood, and each question's pick."""

    accuracy: float
    accuracy_norm: float
    n: int
    picked: tuple[int, ...]  # by summed log-likelihood
    picked_norm: tuple[int, ...]
    chance: float  # the mean of 1 / options: what guessing scores


def option_logprobs(model: CausalLM, tokenizer: Any, questions: Sequence[Question],
                    batch_size: int = 16) -> list[list[float]]:
    """log p(option | prompt) of every option of every question, the option being the whole answer."""
    from labkit.train.data import collate, encode
    from labkit.train.preference import sequence_logps

    pairs = [(q.prompt, option) for q in questions for option in q.options]
    device = next(model.parameters()).device
    scores: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(pairs), batch_size):
            examples = encode(tokenizer, pairs[start:start + batch_size], cutoff=1 << 20).examples
            batch = collate(examples, pad_token_id(tokenizer), device)
            with torch.no_grad():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            scores += sequence_logps(logits, batch["labels"]).tolist()
    finally:
        model.train(was_training)
    out, at = [], 0
    for q in questions:
        out.append(scores[at:at + len(q.options)])
        at += len(q.options)
    return out


def pick(logprobs: Sequence[float], options: Sequence[str]) -> tuple[int, int]:
    """The option picked by summed log-likelihood and by log-likelihood per character (an empty
    option counts one character): lm-evaluation-harness's acc and acc_norm. Ties: the first."""
    per_char = [score / max(len(option), 1) for score, option in zip(logprobs, options, strict=True)]
    return int(np.argmax(logprobs)), int(np.argmax(per_char))


def multiple_choice(model: CausalLM, tokenizer: Any, questions: Sequence[Question],
                    batch_size: int = 16) -> MultipleChoiceResult:
    """Accuracy of the model's likeliest option (ties: the first), summed and per character."""
    if not questions:
        raise ValueError("no questions to evaluate")
    logprobs = option_logprobs(model, tokenizer, questions, batch_size)
    picks = [pick(lp, q.options) for lp, q in zip(logprobs, questions, strict=True)]
    picked, picked_norm = tuple(p for p, _ in picks), tuple(p for _, p in picks)
    answers = np.array([q.answer for q in questions])
    return MultipleChoiceResult(
        accuracy=float(np.mean(np.array(picked) == answers)),
        accuracy_norm=float(np.mean(np.array(picked_norm) == answers)), n=len(questions),
        picked=picked, picked_norm=picked_norm,
        chance=float(np.mean([1 / len(q.options) for q in questions])))


def rule_questions(task: str, n: int, seed: int | Sequence[int], options: int = 4) -> list[Question]:
    """n questions on synthetic patients of `task` (see rule_question), drawn by
    numpy.random.default_rng(seed); records that make no question are skipped."""
    from labkit.pocket.knowledge import load_knowledge
    from labkit.pocket.patients import sample_patients

    knowledge = load_knowledge(task)
    rng = np.random.default_rng(seed)
    questions: list[Question] = []
    while len(questions) < n:
        made = [q for q in (rule_question(r, task, rng, options)
                            for r in sample_patients(knowledge, SCHEMAS[task], n, rng)) if q is not None]
        if not made:
            raise ValueError(f"{task}: {n} synthetic patients made no question with {options} options "
                             "(no rule holds, or too few do not); ask for fewer options")
        questions += made[:n - len(questions)]
    return questions


def rule_question(record: dict[str, Any], task: str, rng: np.random.Generator, options: int = 4
                  ) -> Question | None:
    """The record and "which one finding points to the condition?": the right option is the
    strongest rule that holds, the others rules that do not hold (drawn by rng, as is the right
    option's place). None when no rule holds, or too few do not."""
    from labkit.pocket.corpus import citable_rules, fired_rules
    from labkit.pocket.knowledge import load_knowledge

    knowledge = load_knowledge(task)
    citable = citable_rules(knowledge)
    holding = fired_rules(record, knowledge)
    wrong = [r for r in citable if r not in holding]
    if not holding or len(wrong) < options - 1:
        return None
    choices = [wrong[i].text for i in rng.choice(len(wrong), size=options - 1, replace=False)]
    answer = int(rng.integers(options))
    choices.insert(answer, holding[0].text)
    prompt = f"{to_text(record, SCHEMAS[task])}\n\n{WHICH_ONE.format(condition=knowledge.condition)}"
    return Question(prompt, tuple(choices), answer, f"synthetic {task} patient")


# --- generated answers and probability answers, scored ---------------------------------------------

def generation_scores(hypotheses: Sequence[str], references: Sequence[str], stem: bool = True
                      ) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, 0-100) and mean ROUGE-1/2/L F-measures (rouge-score, 0-1) of
    generated answers against one reference each, in order (see the module docstring)."""
    _check_texts(hypotheses, references)
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics import BLEU

    bleu = BLEU().corpus_score(list(hypotheses), [list(references)]).score
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=stem)
    rouge = [scorer.score(ref, hyp) for hyp, ref in zip(hypotheses, references, strict=True)]
    return {"bleu": float(bleu), **{t: float(np.mean([s[t].fmeasure for s in rouge])) for t in ROUGE_TYPES}}


def _check_texts(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    for name, texts in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(texts, str):
            raise ValueError(f"{name}: give a list of texts, not one string")
        wrong = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if wrong:
            raise ValueError(f"{name}: items {wrong[:5]} are not strings (a missing answer is '')")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references: give one "
                         "reference per hypothesis, in the same order")
    if not hypotheses:
        raise ValueError("no hypotheses to score: give at least one answer and its reference")


def calibration_scores(labels: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray,
                       n_bins: int = 10) -> dict[str, float]:
    """ECE (n_bins equal-width bins), AUC, Brier and accuracy at 0.5 of the answered records (labkit.metrics),
    and how many were answered and how many are parse failures (NaN probabilities, counted, not scored)."""
    from labkit import metrics

    y = np.asarray(labels, dtype=float).ravel()
    p = np.asarray(probabilities, dtype=float).ravel()
    if y.shape != p.shape or not y.size:
        raise ValueError(f"{y.size} labels and {p.size} probabilities: give one probability (NaN when "
                         "the answer did not parse) per label, at least one")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 0 or 1, found {np.unique(y[~np.isin(y, (0.0, 1.0))])[:5].tolist()}")
    answered = ~np.isnan(p)
    y, p = y[answered].astype(int), p[answered]
    scores = dict.fromkeys(("ece", "auc", "brier", "accuracy"), float("nan"))
    if answered.any():
        scores |= {"ece": metrics.ece(y, p, n_bins), "brier": metrics.brier(y, p),
                   "accuracy": metrics.accuracy(y, p)}
    if len(np.unique(y)) == 2:
        scores["auc"] = metrics.auc(y, p)
    return scores | {"answered": float(answered.sum()), "parse_failures": float((~answered).sum())}


# --- the suite -------------------------------------------------------------------------------------

def table_tasks() -> list[str]:
    """The table tasks with knowledge rules: the tasks a Suite can ask about."""
    from labkit.pocket.knowledge import knowledge_tasks

    return [t for t in knowledge_tasks() if t in SCHEMAS and SCHEMAS[t].kind != "text"]


@dataclass(frozen=True)
class Suite:
    """What `evaluate` asks: the task, the benchmarks and their sizes, the seed that draws the records."""

    task: str = option("pima", "the table task: its knowledge rules make the questions and reference "
                       "explanations, its validation split holds the calibration records")
    benchmarks: list[str] = option(factory=lambda: list(BENCHMARKS),
                                   help=f"the benchmarks to run, in this order: some of {BENCHMARKS}")
    n_questions: int = option(64, "multiple-choice questions, one per synthetic patient")
    n_explanations: int = option(64, "synthetic patients whose generated explanation is scored")
    n_records: int = option(200, "validation records asked for a probability (at most the split's size: "
                            "the whole split by default)")
    fast: bool = option(False, f"cap the sizes at {FAST_SIZES}: a check in seconds, not a figure")
    seed: int = option(0, "draws the synthetic patients, the options' order and the validation records")
    batch_size: int = option(16, "prompts (or question options) per forward pass or generate call")
    max_new_tokens: int = option(128, "longest generated explanation, in tokens")
    n_bins: int = option(10, "equal-width bins of the ECE")
    threads: int | None = option(None, "CPU threads torch may use during the suite (None: as it is); 1 keeps "
                                 "a small model fast on a machine that other jobs share")
    progress: bool = option(True, "show a progress bar", bookkeeping=True)

    def __post_init__(self) -> None:
        tasks = table_tasks()
        require(self.task in tasks, self, "task", f"choose a table task with knowledge rules: {tasks}")
        known = not isinstance(self.benchmarks, str) and all(b in BENCHMARKS for b in self.benchmarks)
        require(known and 0 < len(self.benchmarks) == len(set(self.benchmarks)), self, "benchmarks",
                f"name one or more of {BENCHMARKS}, each once")
        for name in ("n_questions", "n_explanations", "n_records", "batch_size", "max_new_tokens", "n_bins"):
            require(getattr(self, name) >= 1, self, name, "it must be at least 1")
        require(self.threads is None or self.threads >= 1, self, "threads", "give None or at least 1")
        if self.fast:  # frozen: the capped sizes are set once, here, so the fields say what runs
            for name, most in FAST_SIZES.items():
                object.__setattr__(self, name, min(getattr(self, name), most))

    def seed_sequence(self, part: int) -> tuple[int, int, int]:
        """The seed of one benchmark's draws: (STREAM, seed, part)."""
        return STREAM, self.seed, part


def questions(suite: Suite) -> list[Question]:
    """The suite's multiple-choice questions (rule_questions on its task)."""
    return rule_questions(suite.task, suite.n_questions, suite.seed_sequence(0))


def explanation_set(suite: Suite) -> tuple[HeldOut, list[str]]:
    """The synthetic patients to explain, as explain prompts with their records, and the faithful
    explanation of each (the rules that hold, strongest first). Patients with no feature left to
    show are skipped."""
    from labkit import prompts
    from labkit.pocket.corpus import explanation
    from labkit.pocket.explanations import MOST, HeldOut
    from labkit.pocket.knowledge import load_knowledge
    from labkit.pocket.patients import sample_patients

    knowledge, schema = load_knowledge(suite.task), SCHEMAS[suite.task]
    rng = np.random.default_rng(suite.seed_sequence(1))
    records: list[dict[str, Any]] = []
    while len(records) < suite.n_explanations:
        drawn = sample_patients(knowledge, schema, suite.n_explanations, rng)
        records += [r for r in drawn if to_text(r, schema)][:suite.n_explanations - len(records)]
    texts = [prompts.explain_prompt(to_text(r, schema), knowledge.condition) for r in records]
    return HeldOut(texts, records, knowledge), [explanation(r, knowledge, MOST) for r in records]


def calibration_records(suite: Suite) -> tuple[list[str], np.ndarray]:
    """n_records records of the task's validation split, drawn by the suite's seed, as text
    (labkit.data.to_text, as annotators send them), and their gold labels."""
    from labkit.data import load

    dataset = load(suite.task)
    records = dataset.features("val").to_dict(orient="records")
    labels = dataset.labels("val")
    rng = np.random.default_rng(suite.seed_sequence(2))
    chosen = np.sort(rng.permutation(len(records))[:suite.n_records])
    return [to_text(records[i], dataset.schema) for i in chosen], labels[chosen]


def probability_answers(model: CausalLM, tokenizer: Any, suite: Suite,
                        mode: Literal["verbalized", "token"]) -> pd.DataFrame:
    """The model's probability for each calibration record (a LocalAnnotator in `mode`, greedy, no
    cache): the annotator's frame (prompt, raw, value: NaN when the answer did not parse, reason)
    with the gold label. labkit.metrics.reliability(frame.label, frame.value) draws its diagram
    once the NaN rows are set aside."""
    from labkit.annotate import LocalAnnotator

    texts, labels = calibration_records(suite)
    annotator = LocalAnnotator(model, tokenizer, mode=mode, batch_size=suite.batch_size, progress=False)
    frame = annotator.annotate(texts, SCHEMAS[suite.task].task)
    frame["label"] = labels
    return frame


# --- one call ---------------------------------------------------------------------------------------

Scores = tuple[dict[str, float], int]  # a benchmark's metrics and the number of items it asked


def _multiple_choice(model: CausalLM, tokenizer: Any, suite: Suite) -> Scores:
    result = multiple_choice(model, tokenizer, questions(suite), suite.batch_size)
    return {"accuracy": result.accuracy, "accuracy_norm": result.accuracy_norm,
            "chance": result.chance}, result.n


def _explanations(model: CausalLM, tokenizer: Any, suite: Suite) -> Scores:
    from labkit.pocket.explanations import explain, mean_faithfulness

    held, references = explanation_set(suite)
    answers = explain(model, tokenizer, held.prompts, suite.max_new_tokens, suite.batch_size)
    faithful = mean_faithfulness(answers, held)
    return {**generation_scores(answers, references), "faithfulness_precision": faithful["precision"],
            "faithfulness_recall": faithful["recall"]}, len(answers)


def _calibration(mode: Literal["verbalized", "token"]) -> Callable[[CausalLM, Any, Suite], Scores]:
    def run(model: CausalLM, tokenizer: Any, suite: Suite) -> Scores:
        frame = probability_answers(model, tokenizer, suite, mode)
        return calibration_scores(frame["label"], frame["value"], suite.n_bins), len(frame)

    return run


RUNS: dict[str, Callable[[CausalLM, Any, Suite], Scores]] = {
    "multiple_choice": _multiple_choice, "explanations": _explanations,
    "calibration_verbalized": _calibration("verbalized"), "calibration_token": _calibration("token")}


@contextmanager
def _running(suite: Suite, models: int) -> Iterator[Any]:
    with tqdm(total=models * len(suite.benchmarks), desc=f"evaluate ({suite.task})", unit="benchmark",
              disable=not suite.progress) as bar, seeded(suite.seed, suite.threads):
        yield bar


def _table(model: CausalLM, tokenizer: Any, suite: Suite, bar: Any, name: str = "") -> pd.DataFrame:
    rows, seconds = [], {}
    for benchmark in suite.benchmarks:
        bar.set_postfix_str(f"{name}: {benchmark}" if name else benchmark)
        start = time.perf_counter()
        scores, n = RUNS[benchmark](model, tokenizer, suite)
        seconds[benchmark] = time.perf_counter() - start
        rows += [(benchmark, metric, float(value), n) for metric, value in scores.items()]
        bar.update()
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs.update(suite=settings(suite), seconds=seconds)
    return frame


def evaluate(model: CausalLM, tokenizer: Any, suite: Suite | None = None) -> pd.DataFrame:
    """Run the suite's benchmarks on one model: a row per (benchmark, metric), columns benchmark,
    metric, value, n (items asked). frame.attrs holds the suite's settings and each benchmark's seconds."""
    suite = suite or Suite()
    with _running(suite, 1) as bar:
        return _table(model, tokenizer, suite, bar)


def compare(models: Mapping[str, CausalLM], tokenizer: Any, suite: Suite | None = None) -> pd.DataFrame:
    """`evaluate` for each model (one tokenizer for all), side by side: columns benchmark, metric, n,
    then one column of values per model, in the mapping's order. frame.attrs["seconds"][name]
    holds each model's seconds per benchmark."""
    clash = sorted(set(models) & {"benchmark", "metric", "n"})
    if not models or clash:
        raise ValueError(f"compare: name one model or more, none called {clash or 'benchmark, metric or n'}")
    suite = suite or Suite()
    with _running(suite, len(models)) as bar:
        tables = {name: _table(model, tokenizer, suite, bar, name) for name, model in models.items()}
    first = next(iter(tables.values()))
    frame = first[["benchmark", "metric", "n"]].copy()
    for name, table in tables.items():
        frame[name] = table["value"].to_numpy()
    seconds = {name: table.attrs["seconds"] for name, table in tables.items()}
    frame.attrs.update(suite=settings(suite), seconds=seconds)
    return frame
