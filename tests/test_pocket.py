"""labkit.pocket: knowledge files, synthetic patients and abstracts, the corpus and its leak check,
the tokenizer, packing, and deterministic pre-training (same seed, same weights; resume)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from labkit.commands.pretrain import parse_args
from labkit.data import SCHEMAS, to_text
from labkit.paths import POCKET_LLM
from labkit.pocket import pretrain as pt
from labkit.pocket.abstracts import NEOPLASM, AbstractWriter
from labkit.pocket.batches import IGNORE, encode, pack
from labkit.pocket.corpus import (
    CorpusConfig,
    Example,
    build_corpus,
    check_leaks,
    follow_ups,
    shingles,
)
from labkit.pocket.knowledge import citations, evaluate, knowledge_tasks, load_knowledge
from labkit.pocket.model import PACKED, Shape, attention, build_model, model_config
from labkit.pocket.patients import sample_patients, spec_missing
from labkit.pocket.tokenizer import CHAT_TEMPLATE, render_chat, train_tokenizer

TABLES = [name for name, s in SCHEMAS.items() if s.kind == "tabular"]
SMALL = CorpusConfig(seed=3).scaled(0.01)


@pytest.fixture(scope="module")
def small_corpus() -> list[Example]:
    return build_corpus(SMALL)


@pytest.fixture(scope="module")
def tokenizer(small_corpus: list[Example]):  # noqa: ANN201
    return train_tokenizer([e.render() for e in small_corpus], vocab_size=1024)


# --- knowledge ---------------------------------------------------------------------------------

def test_every_dataset_has_cited_knowledge() -> None:
    assert set(knowledge_tasks()) == set(SCHEMAS)
    refs = citations()
    for task in SCHEMAS:
        knowledge = load_knowledge(task)
        assert knowledge.rules, task
        for rule in knowledge.rules:
            assert rule.source in refs and len(rule.text) > 20, (task, rule)


@pytest.mark.parametrize("task", TABLES)
def test_rules_name_real_columns(task: str) -> None:
    knowledge = load_knowledge(task)
    columns = set(SCHEMAS[task].feature_names) | set(knowledge.derived)
    assert {r.feature for r in knowledge.rules} <= columns
    for rule in knowledge.rules:
        if rule.equals is not None and rule.feature in SCHEMAS[task].feature_names:
            codes = SCHEMAS[task].feature(rule.feature).codes
            assert rule.equals in codes, (task, rule.feature, rule.equals)


def test_risk_follows_the_textbook() -> None:
    pima = load_knowledge("pima")
    base = {"Glucose": 95.0, "BMI": 23.0, "Age": 25.0}
    assert pima.risk({**base, "Glucose": 210.0}) > pima.risk(base) + 0.3
    assert pima.risk({**base, "Glucose": float("nan")}) < pima.risk({**base, "Glucose": 210.0})
    heart = load_knowledge("heart")
    calm = {"Age": 40, "Sex": "F", "ExerciseAngina": "N", "Oldpeak": 0.0, "ST_Slope": "Up"}
    ischaemic = {**calm, "ExerciseAngina": "Y", "Oldpeak": 2.5, "ST_Slope": "Flat"}
    assert heart.risk(ischaemic) > 0.5 > heart.risk(calm)


def test_derived_features() -> None:
    assert evaluate("MaxHR / (220 - Age)", {"MaxHR": 150, "Age": 70}) == pytest.approx(1.0)
    assert math.isnan(evaluate("AST / ALT", {"AST": 40, "ALT": float("nan")}))
    assert math.isnan(evaluate("AST / ALT", {"AST": 40, "ALT": 0}))


# --- synthetic patients and abstracts ------------------------------------------------------------

@pytest.mark.parametrize("task", TABLES)
def test_patients_use_the_datasets_coding(task: str) -> None:
    schema = SCHEMAS[task]
    records = sample_patients(load_knowledge(task), schema, 300, np.random.default_rng(0))
    frame = pd.DataFrame(records)
    assert list(frame.columns) == schema.feature_names
    knowledge = load_knowledge(task)
    for f in schema.features:
        present = frame[f.name].dropna()
        expected = 300 * (1 - spec_missing(knowledge.patients[f.name]) - 0.05)
        assert len(present) > expected - 30, f"{task}.{f.name} is missing too often"
        if f.codes:
            assert set(present.astype(str)) <= set(f.codes), (task, f.name)
        else:
            assert pd.api.types.is_numeric_dtype(present), (task, f.name)
    assert frame.isna().any().any(), "some values must be missing, as in real records"
    assert to_text(records[0], schema, style="prose")


def test_patients_are_deterministic() -> None:
    knowledge, schema = load_knowledge("hcv"), SCHEMAS["hcv"]
    a = sample_patients(knowledge, schema, 50, np.random.default_rng(7))
    b = sample_patients(knowledge, schema, 50, np.random.default_rng(7))
    assert pd.DataFrame(a).equals(pd.DataFrame(b))


def test_abstract_answers_follow_the_topic() -> None:
    writer = AbstractWriter(load_knowledge("abstracts"), np.random.default_rng(0))
    abstracts = [writer.write() for _ in range(200)]
    neoplasm = [writer.risk(a) for a in abstracts if a.topic == NEOPLASM]
    other = [writer.risk(a) for a in abstracts if a.topic != NEOPLASM]
    assert len(neoplasm) > 40 and len(other) > 80
    assert np.mean(neoplasm) > 0.8 > 0.2 > np.mean(other)
    assert all("{" not in a.text for a in abstracts), "an unfilled slot"


# --- corpus and leak check -----------------------------------------------------------------------

def test_corpus_is_deterministic_and_uses_the_prompts(small_corpus: list[Example]) -> None:
    again = build_corpus(SMALL)
    assert [e.render() for e in again] == [e.render() for e in small_corpus]
    kinds = {e.kind for e in small_corpus}
    assert {"record", "abstract", "knowledge", "chat"} <= kinds
    texts = [e.messages[0]["content"] for e in small_corpus if e.kind == "record"]
    assert any("Please predict the probability that" in t for t in texts)
    assert any(t.endswith("Answer Yes or No.") for t in texts)
    for e in small_corpus:
        if e.p_yes is not None:
            assert e.messages[-1]["content"] in ("Yes", "No") and 0 <= e.p_yes <= 1


def test_follow_up_checks_are_exact() -> None:
    schema, knowledge = SCHEMAS["pima"], load_knowledge("pima")
    record = {name: float("nan") for name in schema.feature_names}
    record |= {"Glucose": 150.0, "BMI": 24.9}
    turns = follow_ups(record, schema, knowledge, 10, np.random.default_rng(0))
    qa = dict(zip([t["content"] for t in turns[::2]], [t["content"] for t in turns[1::2]],
                  strict=True))
    glucose = "Is the plasma glucose 2 h after an oral glucose load at least {} mg/dL? Answer Yes or No."
    assert qa[glucose.format(140)] == "Yes" and qa[glucose.format(200)] == "No"
    assert qa["Is the body mass index at least 25 kg/m2? Answer Yes or No."] == "No"
    assert all("Age" not in q and "age " not in q for q in qa), "a missing value is not asked about"


def test_corpus_generation_never_reads_a_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import labkit.data.loading as loading

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the corpus generator read a shipped data set")

    monkeypatch.setattr(loading, "_read_raw", refuse)
    monkeypatch.setattr(loading, "_parse_cached", refuse)
    monkeypatch.setattr(pd, "read_csv", refuse)
    assert build_corpus(CorpusConfig(seed=11).scaled(0.003))


def test_corpus_holds_no_shipped_record_or_abstract(small_corpus: list[Example]) -> None:
    report = check_leaks(small_corpus, TABLES)
    assert report.clean, str(report)
    assert set(report.records) | set(report.chance_matches) == set(TABLES)
    assert set(report.chance_matches) == {"early_diabetes"}  # age + 15 yes/no symptoms


def test_leak_check_finds_a_planted_record_and_sentence() -> None:
    from labkit.data import load

    pima, abstracts = load("pima"), load("abstracts")
    real = to_text(pima.features("test").iloc[0].to_dict(), pima.schema, style="prose")
    sentence = " ".join(abstracts.frame["text"].iloc[5].split()[:12])
    planted = [
        Example(kind="record", task="pima", messages=(
            {"role": "user", "content": f"{real}\n\nIs it likely? Answer Yes or No."},
            {"role": "assistant", "content": "Yes"})),
        Example(kind="knowledge", text=f"Background. {sentence} and more."),
    ]
    report = check_leaks(planted, ["pima"])
    assert not report.clean
    assert report.records["pima"] == 1 and report.abstract_shingles >= 5


def test_shingles() -> None:
    assert len(shingles("one two three four five six seven eight nine")) == 2
    assert shingles("Seven words only, which is too few.") == set()


# --- tokenizer and packing -----------------------------------------------------------------------

def test_tokenizer_digits_answers_and_template(tokenizer) -> None:  # noqa: ANN001
    pieces = tokenizer.tokenize("Glucose: 148 mg/dL, p 0.72")
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == ["1", "4", "8", "0", "7", "2"]
    for word in ("Yes", "No"):
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert tokenizer.apply_chat_template(messages, tokenize=False) == render_chat(messages)
    prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True,
                                           tokenize=False)
    assert prompt == render_chat(messages[:1], add_generation_prompt=True)


def test_encoding_matches_whole_text_and_carries_soft_targets(small_corpus, tokenizer) -> None:  # noqa: ANN001
    examples = [e for e in small_corpus if e.p_yes is not None][:20] + small_corpus[:20]
    encoded = encode(examples, tokenizer)
    for example, e in zip(examples, encoded, strict=True):
        assert e.ids.tolist() == tokenizer.encode(example.render(), add_special_tokens=False)
        assert (e.targets[:-1] == e.ids[1:]).all() and e.targets[-1] == IGNORE
        if example.p_yes is not None:
            at = int(np.flatnonzero(e.alt != IGNORE)[0])
            yes = tokenizer.convert_tokens_to_ids("Yes")
            p_yes = 1 - e.alt_share[at] if e.targets[at] == yes else e.alt_share[at]
            assert p_yes == pytest.approx(example.p_yes, abs=1e-6)
            assert e.weights[at] == example.answer_weight


def test_packing_keeps_every_token(small_corpus, tokenizer) -> None:  # noqa: ANN001
    encoded = encode(small_corpus, tokenizer)
    rows = pack(encoded, 256, tokenizer.pad_token_id, np.random.default_rng(0))
    kept = [e for e in encoded if len(e.ids) <= 256]
    assert rows.dropped == len(encoded) - len(kept)
    # every token but each example's last one predicts the next
    assert (rows.targets != IGNORE).sum() == sum(len(e.ids) - 1 for e in kept)
    assert rows.tokens == sum(len(e.ids) for e in kept) > 0.9 * rows.input_ids.size
    assert rows.weights.sum() == pytest.approx(sum(e.weights.sum() for e in kept), rel=1e-5)
    starts = (rows.position_ids == 0).sum()
    assert starts >= len(kept)  # every example restarts its positions (plus one per padded tail)


# --- pre-training --------------------------------------------------------------------------------

def test_packed_attention_equals_the_packed_mask(small_corpus, tokenizer) -> None:  # noqa: ANN001
    """The training kernel gives the loss and gradients of transformers' own block-diagonal mask
    (sdpa reads restarting position ids as packed examples), and keeps examples apart."""
    rows = pack(encode(small_corpus, tokenizer), 256, tokenizer.pad_token_id,
                np.random.default_rng(0))
    batch = pt.batch_at(rows, 0, 3)
    assert (batch["position_ids"] == 0).sum() > 3  # several examples per row
    config = model_config(Shape(hidden_size=32, layers=2, heads=2, intermediate_size=64),
                          len(tokenizer), 0, tokenizer.pad_token_id)
    losses, grads = [], []
    for implementation in ("sdpa", PACKED):
        model = build_model(config, seed=0)
        with attention(model, implementation):
            loss, _ = pt.weighted_loss(model, batch, isolate_examples=True)
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad for p in model.parameters()])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads, strict=True))
    assert model.config._attn_implementation == "sdpa"  # the block restored the implementation
    # a change to one example leaves the next example's output alone
    ids, positions = batch["input_ids"][:1], batch["position_ids"][:1]
    second = int((positions[0] == 0).nonzero()[1])
    changed = ids.clone()
    changed[0, : second - 1] = (changed[0, : second - 1] + 1) % len(tokenizer)
    with attention(model, PACKED), torch.no_grad():
        before, after = (model.model(input_ids=x, position_ids=positions).last_hidden_state
                         for x in (ids, changed))
    assert torch.allclose(before[0, second:], after[0, second:], atol=1e-6)
    assert not torch.allclose(before[0, : second - 1], after[0, : second - 1])



def test_lesson_a1_reference_loss_is_the_training_loss(small_corpus, tokenizer) -> None:  # noqa: ANN001
    """Exercise A1.soft_loss grades against the loss pre-training minimizes, soft answers included."""
    from labkit.grading import bank

    rows = pack(encode(small_corpus, tokenizer), 256, tokenizer.pad_token_id, np.random.default_rng(0))
    batch = pt.batch_at(rows, 0, 3)
    assert ((batch["alt_share"] > 0) & (batch["weights"] > 0)).sum() > 0  # soft answers in the batch
    model = build_model(model_config(Shape(hidden_size=32, layers=2, heads=2, intermediate_size=64),
                                     len(tokenizer), 0, tokenizer.pad_token_id), seed=0)
    with attention(model, PACKED), torch.no_grad():
        loss, _ = pt.weighted_loss(model, batch, isolate_examples=True)
        hidden = model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).last_hidden_state
        log_probs = torch.log_softmax(model.lm_head(hidden).float(), dim=-1)
    flat = {name: batch[name].reshape(-1).numpy() for name in ("targets", "alt", "alt_share", "weights")}
    reference = bank.get("A1.soft_loss").reference(log_probs.reshape(-1, log_probs.shape[-1]).numpy(),
                                                   flat["targets"], flat["alt"], flat["alt_share"],
                                                   flat["weights"])
    assert reference == pytest.approx(loss.item(), rel=1e-5)


def _tiny(tmp_path: Path, name: str, **changes: object) -> pt.PretrainConfig:
    config = pt.PretrainConfig(
        out=tmp_path / name / "model", run_dir=tmp_path / name / "run", corpus_scale=0.003,
        vocab_size=512, shape=Shape(hidden_size=32, layers=1, heads=2, intermediate_size=64),
        seq_len=256, batch_rows=2, max_steps=4, warmup_steps=2, save_steps=2,
        eval_steps=0, leak_check=False, progress=False, threads=1)
    return replace(config, **changes)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_pretraining_is_deterministic_and_resumable(tmp_path: Path) -> None:
    first = pt.pretrain(_tiny(tmp_path, "a"))
    second = pt.pretrain(_tiny(tmp_path, "b"))
    a, b = _weights(first.model), _weights(second.model)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert first.history[0]["loss"] > first.history[-1]["loss"]
    # two steps, then resume for the other two: the same weights as four steps in one go
    pt.pretrain(_tiny(tmp_path, "c", max_steps=2))
    resumed = pt.pretrain(_tiny(tmp_path, "c", resume=True))
    c = _weights(resumed.model)
    assert len(resumed.history) == 4
    assert all(torch.allclose(a[k], c[k], atol=1e-6) for k in a)
    other = pt.pretrain(_tiny(tmp_path, "d", seed=1))
    assert not all(torch.allclose(a[k], v, atol=1e-6) for k, v in _weights(other.model).items()
                   if k in a)
    saved = tmp_path / "a" / "model"
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
            "training.json", "loss_curve.png"} <= {p.name for p in saved.iterdir()}


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    pt.pretrain(_tiny(tmp_path, "e", max_steps=2))
    with pytest.raises(ValueError, match="other settings"):
        pt.pretrain(_tiny(tmp_path, "e", resume=True, learning_rate=1e-3))


def test_learning_rate_warms_up_holds_and_decays() -> None:
    config = pt.PretrainConfig(learning_rate=1e-2, min_lr=1e-3, warmup_steps=10, decay_fraction=0.3)
    rates = [pt.learning_rate(step, 100, config) for step in range(100)]
    assert rates[0] == pytest.approx(1e-3) and rates[9] == pytest.approx(1e-2)
    assert rates[10:70] == [1e-2] * 60
    assert all(a >= b for a, b in zip(rates[70:], rates[71:], strict=False))
    assert rates[-1] == pytest.approx(1e-3, rel=0.05)


def test_command_line_fast_mode_does_not_touch_the_shipped_model() -> None:
    config = parse_args(["--fast"])
    assert config.out != POCKET_LLM and config.max_steps and config.corpus_scale < 0.1
    assert parse_args([]).out == POCKET_LLM


@pytest.mark.parametrize("task", ["pima", "hcv", "heart"])
def test_shipped_model_follows_its_rules(task: str) -> None:
    """The shipped model's P(Yes) tracks the textbook rule on synthetic patients it never saw."""
    from labkit.annotate import LocalAnnotator
    from labkit.loader import load_model, load_tokenizer

    model, tokenizer = load_model(), load_tokenizer()
    annotator = LocalAnnotator(model, tokenizer, mode="token", batch_size=32, progress=False)
    schema, knowledge = SCHEMAS[task], load_knowledge(task)
    records = sample_patients(knowledge, schema, 48, np.random.default_rng(12345))
    values = annotator.annotate([to_text(r, schema) for r in records], schema.task)["value"]
    rule = [knowledge.risk(r) for r in records]
    assert np.corrcoef(values, rule)[0, 1] > 0.7, task
