"""The SERVAL loop's guarantees: gold labels are for evaluation only, and a killed run resumes."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_models import tiny_chat_model  # tests/ is on sys.path (conftest.py)

import labkit.data as data
import labkit.serval as serval
from labkit.data import Dataset
from labkit.noisy import RankingDisagreement

CONFIG = serval.ServalConfig(
    iterations=2, vertical="mlp", vertical_options={"epochs": 8}, noisy_method="confident",
    max_train_rows=60, max_backtune_examples=24, num_train_epochs=2, per_device_train_batch_size=8,
    cutoff_len=256, learning_rate=1e-4, progress=False,
)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pima = data.load("pima")
    texts = [data.to_text(r, pima.schema) for r in pima.features("train").head(40).to_dict("records")]
    model, tokenizer = tiny_chat_model(texts=texts, task=pima.schema.task, yes_no_weight=100)
    folder = tmp_path_factory.mktemp("tiny-llm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _permuted(dataset: Dataset, seed: int) -> Dataset:
    """The same rows and splits, with the gold labels shuffled within each split."""
    shuffled = Dataset(dataset.schema, dataset.frame.copy(), dataset.seed)
    rng = np.random.default_rng(seed)
    for split in data.SPLITS:
        rows = dataset._index[split]
        shuffled.frame.loc[rows, data.LABEL] = rng.permutation(dataset.frame.loc[rows, data.LABEL].to_numpy())
    shuffled._index = dataset._index
    assert not shuffled.frame[data.LABEL].equals(dataset.frame[data.LABEL])
    return shuffled


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _assert_same_training(a: Path, b: Path, iterations: int) -> None:
    for it in range(1, iterations + 1):
        wa, wb = _weights(a / f"iteration_{it}" / "llm"), _weights(b / f"iteration_{it}" / "llm")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        pa = np.load(a / f"iteration_{it}" / "predictions.npz")
        pb = np.load(b / f"iteration_{it}" / "predictions.npz")
        np.testing.assert_array_equal(pa["vertical"], pb["vertical"])
        np.testing.assert_array_equal(pa["llm"], pb["llm"])


@pytest.mark.parametrize("method", ["confident", "naive"])  # back-tuning: hard on confident rows; soft
def test_permuting_gold_labels_changes_no_trained_weight(llm: Path, tmp_path: Path, method: str) -> None:
    pima, config = data.load("pima"), replace(CONFIG, noisy_method=method)
    honest = serval.run(pima, llm, config, tmp_path / "honest", log=lambda _: None)
    permuted = serval.run(_permuted(pima, 1), llm, config, tmp_path / "permuted", log=lambda _: None)
    _assert_same_training(tmp_path / "honest" / "pima", tmp_path / "permuted" / "pima", config.iterations)
    # ... while the evaluation, which reads the gold labels, does see the difference
    assert honest.iterations[0].llm_auc != permuted.iterations[0].llm_auc
    assert len(honest.iterations) == 2 and honest.iterations[0].backtune_examples > 0


@pytest.mark.parametrize("method", ["confident", "naive"])
def test_a_run_killed_during_back_tuning_resumes_and_ends_the_same(
        llm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    config = replace(CONFIG, iterations=1, noisy_method=method)
    reference = serval.run("pima", llm, config, tmp_path / "reference", log=lambda _: None)

    real_train_sft = serval.train_sft

    def killed_after_two_steps(*args, **kwargs):  # type: ignore[no-untyped-def]
        def kill(info) -> None:  # type: ignore[no-untyped-def]
            if info.step == info.total_steps - 1:  # in the second epoch: the first one is saved
                raise KeyboardInterrupt("killed during back-tuning")
        return real_train_sft(*args, callbacks=[kill], **kwargs)

    monkeypatch.setattr(serval, "train_sft", killed_after_two_steps)
    with pytest.raises(KeyboardInterrupt):
        serval.run("pima", llm, config, tmp_path / "resumed", log=lambda _: None)
    assert (tmp_path / "resumed" / "pima" / "sft_1").is_dir()  # its checkpoints survived
    monkeypatch.setattr(serval, "train_sft", real_train_sft)
    resumed = serval.run("pima", llm, config, tmp_path / "resumed", log=lambda _: None)
    _assert_same_training(tmp_path / "reference" / "pima", tmp_path / "resumed" / "pima", 1)
    assert resumed.row == reference.row


def test_a_finished_run_is_read_back_not_redone(llm: Path, tmp_path: Path) -> None:
    config = replace(CONFIG, iterations=1)
    first = serval.run("pima", llm, config, tmp_path, log=lambda _: None)
    lines: list[str] = []
    again = serval.run("pima", llm, config, tmp_path, log=lines.append)
    assert any("already done" in line for line in lines)
    assert again.row == first.row
    table = serval.results_table([first])
    assert list(table.columns) == ["LLM zero-shot", "LLM after SERVAL", "vertical (SERVAL)",
                                   "vertical (supervised)", "% of supervised AUC"]
    assert table.loc["pima", "% of supervised AUC"] == pytest.approx(
        100 * first.iterations[-1].vertical_auc / first.supervised_auc, abs=0.1)


def test_a_folder_with_another_runs_settings_is_refused(llm: Path, tmp_path: Path) -> None:
    config = replace(CONFIG, iterations=1)
    serval.run("pima", llm, config, tmp_path, log=lambda _: None)
    with pytest.raises(ValueError, match=r"other settings \(learning_rate: 0\.0001 -> 0\.001\)"):
        serval.run("pima", llm, replace(config, learning_rate=1e-3), tmp_path, log=lambda _: None)
    more = serval.run("pima", llm, replace(config, iterations=2), tmp_path, log=lambda _: None)
    assert len(more.iterations) == 2  # more iterations extend the run


def test_the_guard_keeps_online_what_it_keeps_reading_the_unguarded_run(llm: Path, tmp_path: Path) -> None:
    config = replace(CONFIG, noisy_method="naive")
    plain = serval.run("pima", llm, config, tmp_path / "plain", log=lambda _: None)
    guarded_config = replace(config, val_labels=20)
    guarded = serval.run("pima", llm, guarded_config, tmp_path / "guarded", log=lambda _: None)
    folder = tmp_path / "plain" / "pima"
    offline = serval.gold_report(data.load("pima"), guarded_config, folder, plain.iterations,
                                 np.load(folder / serval.FINAL_PREDICTIONS)["llm_val"])
    assert plain.gold is None and guarded.gold == asdict(offline) and offline.rows == 20
    assert (guarded.kept_llm, guarded.kept_vertical) == (offline.kept_llm, offline.kept_vertical)
    # the row reports the kept states: the LLM after kept_llm back-tunings annotated the next iteration
    kept_llm_auc = (plain.llm_final_auc if offline.kept_llm == config.iterations
                    else plain.iterations[offline.kept_llm].llm_auc)
    assert guarded.row["LLM after SERVAL"] == round(kept_llm_auc, 3)
    kept_vertical_auc = plain.iterations[offline.kept_vertical - 1].vertical_auc
    assert guarded.row["vertical (SERVAL)"] == round(kept_vertical_auc, 3)


def test_a_vertical_model_that_does_not_follow_the_llm_stops_the_loop_before_back_tuning(
        llm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fit, fits = serval.fit_vertical, []

    def refused_in_iteration_2(*args, **kwargs):  # type: ignore[no-untyped-def]
        model = real_fit(*args, **kwargs)
        fits.append(model)
        if len(fits) == 2:  # as fit_noisy refuses it: the model travels with the error
            raise RankingDisagreement("does not rank the rows as the annotator does", model)
        return model

    monkeypatch.setattr(serval, "fit_vertical", refused_in_iteration_2)
    config = replace(CONFIG, iterations=3, noisy_method="naive")
    result = serval.run("pima", llm, config, tmp_path, log=lambda _: None)
    assert [r.refused for r in result.iterations] == [False, True]
    assert not (tmp_path / "pima" / "iteration_3").exists()
    assert result.iterations[1].backtune_examples == 0 and result.iterations[0].backtune_examples > 0
    # the LLM in hand was tuned once; the row reports the vertical model that was not refused
    assert result.kept_llm == 1 and result.llm_final_auc == result.iterations[1].llm_auc
    assert result.row["vertical (SERVAL)"] == round(result.iterations[0].vertical_auc, 3)
    assert len(result.warnings) == 1 and result.warnings[0].startswith("iteration 2:")
    again = serval.run("pima", llm, config, tmp_path, log=lambda _: None)  # read back: stops again
    assert len(fits) == 2 and again.row == result.row


@pytest.mark.parametrize(("scores", "kept"), [([0.5, 0.9, 0.4], 1), ([0.5, 0.4, 0.9], 2),
                                              ([0.9, 0.4, 0.5], 0)])
def test_back_tuning_keeps_the_epoch_the_judge_prefers(
        llm: Path, tmp_path: Path, scores: list[float], kept: int) -> None:
    from labkit.loader import load_model, load_tokenizer

    examples = [{"prompt": f"patient {i}: sick?", "answer": "Yes" if i % 2 else "No"} for i in range(16)]
    config = replace(CONFIG, num_train_epochs=2, per_device_train_batch_size=8)

    def tune(judge, folder: str) -> tuple[dict[str, torch.Tensor], int, list[float]]:  # type: ignore[no-untyped-def]
        model, tokenizer = load_model(llm), load_tokenizer(llm)
        tuned, _, epoch, seen = serval.backtune(model, tokenizer, examples, config, tmp_path / folder, judge)
        return tuned.state_dict(), epoch, seen

    verdicts = iter(scores)
    chosen, epoch, seen = tune(lambda _: next(verdicts), "judged")
    assert (epoch, seen) == (kept, scores)
    last, _, _ = tune(None, "last")  # no judge: the last epoch, merged
    untuned = load_model(llm).state_dict()
    assert chosen.keys() == last.keys() == untuned.keys()  # merged or unloaded: a plain model
    assert all(torch.equal(chosen[k], untuned[k]) for k in chosen) == (kept == 0)
    assert all(torch.equal(chosen[k], last[k]) for k in chosen) == (kept == 2)


def test_summary_counts_gains_and_the_share_of_the_gap_closed() -> None:
    import pandas as pd

    table = pd.DataFrame({
        "LLM zero-shot": [0.70, 0.90, 0.80], "LLM after SERVAL": [0.80, 0.89, 0.80],
        "vertical (SERVAL)": [0.85, 0.90, 0.78], "vertical (supervised)": [0.95, 0.95, 0.80],
        "% of supervised AUC": [89.5, 94.7, 97.5]}, index=["a", "b", "c"])
    table.loc["mean"] = table.mean()  # as results_table adds it: summary leaves it out
    text = serval.summary(table)
    # gains +0.10, -0.01, 0: one task above; mean gain 0.03 of a mean gap 0.10
    assert "on 1 of 3 tasks" in text and "closed 30%" in text and "reached 93.9%" in text


def _seed_rows():  # type: ignore[no-untyped-def]
    import pandas as pd

    # seed 0: task a gains 0.10 of a 0.20 gap, b loses 0.02 of a 0.10 gap; seed 1: a gains 0.05, b 0.01
    return pd.DataFrame({
        "task": ["a", "b", "a", "b"], "seed": [0, 0, 1, 1],
        "LLM zero-shot": [0.70, 0.80, 0.72, 0.82], "LLM after SERVAL": [0.80, 0.78, 0.77, 0.83],
        "vertical (SERVAL)": [0.85, 0.86, 0.83, 0.84], "vertical (supervised)": [0.90, 0.90, 0.92, 0.88],
        "% of supervised AUC": [94.4, 95.6, 90.2, 95.5]})


def test_the_seeds_table_gives_each_task_and_the_mean_over_tasks_with_their_spread_over_seeds() -> None:
    table = serval.seeds_table(_seed_rows())
    assert list(table.index) == ["a", "b", "mean"]
    after_a = np.array([0.80, 0.77])
    assert table.loc["a", "LLM after SERVAL"] == f"{after_a.mean():.3f} ± {after_a.std(ddof=1):.3f}"
    mean_per_seed = np.array([(0.80 + 0.78) / 2, (0.77 + 0.83) / 2])  # over tasks within a seed first
    assert table.loc["mean", "LLM after SERVAL"] == (f"{mean_per_seed.mean():.3f} ± "
                                                      f"{mean_per_seed.std(ddof=1):.3f}")
    assert table.loc["b", "% of supervised AUC"] == "95.5 ± 0.1"


def test_the_seeds_summary_takes_each_figure_within_a_seed_then_its_spread() -> None:
    text = serval.seeds_summary(_seed_rows())
    improved = np.array([1, 2])  # seed 0: a only; seed 1: both
    closed = 100 * np.array([(0.10 - 0.02) / 2 / ((0.20 + 0.10) / 2), (0.05 + 0.01) / 2 / ((0.20 + 0.06) / 2)])
    assert f"on {improved.mean():.1f} ± {improved.std(ddof=1):.1f} of 2 tasks" in text
    assert f"closes {closed.mean():.0f} ± {closed.std(ddof=1):.0f}%" in text


def test_the_readme_results_are_the_committed_results_file_rendered() -> None:
    """No figure of the README's results block is typed by hand: benchmarks/serval_seeds.py writes
    docs/results/serval_seeds.csv from its runs and renders the block from that file."""
    from labkit.docblocks import read_block

    root = Path(__file__).resolve().parents[1]
    rows, header = serval.read_seed_rows(root / "docs" / "results" / "serval_seeds.csv")
    assert set(rows["task"]) == set(serval.TASKS) and rows["seed"].nunique() >= 3
    assert read_block(root / "README.md", "serval_seeds") == serval.seeds_markdown(rows, header)


def test_backtuning_teaches_what_the_vertical_model_learned_from() -> None:
    base = serval.ServalConfig()
    assert serval.backtune_settings("naive", base) == ("soft", 0.5, "none")  # every row's soft label
    assert serval.backtune_settings("confident", base) == ("both", 0.7, "equal")  # the confident rows
    chosen = replace(base, answers="yes_no", threshold=0.9, balance="prior")
    assert serval.backtune_settings("naive", chosen) == ("yes_no", 0.9, "prior")


def test_every_ablation_changes_what_the_loop_does_on_a_table() -> None:
    """Each ablation switches something the loop resolves on a table whose answers fall on both
    sides of 0.5 (the no-op ablations that matched the full run everywhere are gone)."""
    both_sides, table = np.array([0.2, 0.4, 0.6, 0.9]), data.load("pima")

    def resolved(config: serval.ServalConfig) -> tuple[object, ...]:
        hard = config.hard_labels and serval.can_round(table, both_sides)
        method = config.noisy_method or serval.default_noisy_method(table)
        return hard, serval.backtune_settings(method, config), config.vertical, config.iterations

    base = serval.ServalConfig()
    full = resolved(base.ablation("full"))
    assert full == (False, ("soft", 0.5, "none"), None, 2)
    changed = {name: resolved(base.ablation(name)) for name in serval.ABLATIONS if name != "full"}
    assert all(value != full for value in changed.values()), changed
    assert changed["hard_backtuning"][1] == ("yes_no", 0.7, "equal")
    assert changed["ft_transformer_teacher"][2] == "ft_transformer"
    with pytest.raises(ValueError, match="unknown ablation"):
        base.ablation("nope")


def test_answers_can_be_rounded_on_tables_unless_one_class_would_be_left() -> None:
    pima, abstracts = data.load("pima"), data.load("abstracts")
    assert serval.can_round(pima, np.array([0.2, 0.7, np.nan, 0.4]))
    assert not serval.can_round(pima, np.array([0.2, 0.3, 0.45]))  # never leans to Yes
    assert not serval.can_round(abstracts, np.array([0.2, 0.7, 0.4]))
