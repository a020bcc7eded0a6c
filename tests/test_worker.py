"""labkit.worker: every format and file type reads to the same Sample; bad rows are named or counted."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labkit.worker import (
    FormatError,
    RegistryError,
    Report,
    Sample,
    as_iterable_dataset,
    iter_samples,
    load_samples,
    lookup,
    register,
)

SYSTEM, HISTORY = "Be brief.", (("Is 2 even?", "Yes"),)
ALPACA = {"instruction": "Is 3 even?", "input": "Think first.", "output": "No", "system": SYSTEM,
          "history": [list(t) for t in HISTORY]}
SHAREGPT = {"conversations": [{"from": "system", "value": SYSTEM}, {"from": "human", "value": "Is 2 even?"},
                              {"from": "gpt", "value": "Yes"}, {"from": "human", "value": "Is 3 even?\nThink first."},
                              {"from": "gpt", "value": "No"}]}
OPENAI = {"messages": [{"role": m["from"].replace("human", "user").replace("gpt", "assistant"),
                        "content": m["value"]} for m in SHAREGPT["conversations"]]}
EXPECTED = (SYSTEM, HISTORY, "Is 3 even?\nThink first.", "No")
ALPACA_COLUMNS = {"system": "system", "history": "history"}


def write(folder: Path, name: str, rows: list[dict[str, Any]]) -> str:
    """Write rows as the file type `name` ends with; nested values of a CSV cell as JSON text."""
    path = folder / name
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    elif path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in r.items()}
                             for r in rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return name


def fields(sample: Sample) -> tuple[Any, ...]:
    return sample.system, sample.history, sample.prompt, sample.response


@pytest.mark.parametrize("file_name", ["d.json", "d.jsonl", "d.csv", "d.parquet"])
@pytest.mark.parametrize(("formatting", "row", "columns"), [
    ("alpaca", ALPACA, ALPACA_COLUMNS), ("sharegpt", SHAREGPT, None), ("openai", OPENAI, None)])
def test_every_format_and_file_type_reads_to_the_same_sample(tmp_path: Path, file_name: str, formatting: str,
                                                             row: dict[str, Any], columns: Any) -> None:
    register(tmp_path, "d", write(tmp_path, file_name, [row, row]), formatting=formatting,  # type: ignore[arg-type]
             columns=columns)
    samples, report = load_samples("d", tmp_path)
    assert [fields(s) for s in samples] == [EXPECTED, EXPECTED]
    assert samples[0].kind == "sft" and samples[0].source.startswith(f"{tmp_path / file_name} row 0")
    assert (report.read, report.rejected) == (2, [])


def test_preference_and_kto_data_in_both_formats(tmp_path: Path) -> None:
    pairs = [{"instruction": "Is 3 even?", "chosen": "No.", "rejected": "Yes."}]
    register(tmp_path, "a", write(tmp_path, "a.json", pairs), ranking=True,
             columns={"chosen": "chosen", "rejected": "rejected"})
    sharegpt = [{"conversations": [{"from": "human", "value": "Is 3 even?"}],
                 "chosen": {"from": "gpt", "value": "No."}, "rejected": {"from": "gpt", "value": "Yes."}}]
    register(tmp_path, "s", write(tmp_path, "s.jsonl", sharegpt), formatting="sharegpt", ranking=True,
             columns={"messages": "conversations", "chosen": "chosen", "rejected": "rejected"})
    kto = [{"messages": [{"role": "user", "content": "Is 3 even?"}, {"role": "assistant", "content": "No."}],
            "label": True},
           {"messages": [{"role": "user", "content": "Is 3 even?"}, {"role": "assistant", "content": "Yes."}],
            "label": False}]
    register(tmp_path, "k", write(tmp_path, "k.jsonl", kto), formatting="sharegpt",
             columns={"messages": "messages", "kto_tag": "label"},
             tags={"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"})
    samples, _ = load_samples("a,s,k", tmp_path)
    assert [s.kind for s in samples] == ["preference", "preference", "feedback", "feedback"]
    assert {(s.prompt, s.chosen, s.rejected) for s in samples[:2]} == {("Is 3 even?", "No.", "Yes.")}
    assert [(s.response, s.desirable) for s in samples[2:]] == [("No.", True), ("Yes.", False)]


@pytest.mark.parametrize(("rows", "message"), [
    ([ALPACA, {**ALPACA, "output": 3}], r"d.jsonl row 1 \(line 2\) of 'd', field 'output': expected text, got int"),
    ([ALPACA, {"instrution": "typo", "output": "x"}], r"row 1 .* field 'instruction': missing; the row's fields are "
                                                       r"'instrution', 'output'"),
    ([ALPACA, {**ALPACA, "history": [["only the question"]]}], r"row 1 .* field 'history\[0\]': expected a \[user"),
    ([ALPACA, {**ALPACA, "instruction": "  "}], r"row 1 .* field 'instruction': empty"),
])
def test_a_bad_alpaca_row_names_the_file_the_row_and_the_field(tmp_path: Path, rows: list[Any],
                                                                 message: str) -> None:
    register(tmp_path, "d", write(tmp_path, "d.jsonl", rows), columns=ALPACA_COLUMNS)
    with pytest.raises(FormatError, match=message):
        load_samples("d", tmp_path)


def test_a_bad_sharegpt_row_names_the_message_and_the_tags_expected(tmp_path: Path) -> None:
    typo = {"conversations": [{"from": "human", "value": "hi"}, {"from": "hummany", "value": "x"}]}
    order = {"conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "x"}]}
    register(tmp_path, "t", write(tmp_path, "t.jsonl", [SHAREGPT, typo]), formatting="sharegpt")
    register(tmp_path, "o", write(tmp_path, "o.jsonl", [order]), formatting="sharegpt")
    with pytest.raises(FormatError, match=r"row 1 .* field 'conversations\[1\].from': unknown role 'hummany'; "
                                          r"this dataset's tags expect 'human' \(user\), 'gpt' \(assistant\)"):
        load_samples("t", tmp_path)
    with pytest.raises(FormatError, match=r"conversations\[0\]': role 'assistant' where the conversation needs "
                                          r"the user's turn"):
        load_samples("o", tmp_path)


def test_broken_json_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps(ALPACA) + "\n\n" + '{"instruction": "x"\n', encoding="utf-8")
    (tmp_path / "b.json").write_text('[{"instruction": "x", "output": "y"},\n {"instruction" "x"}]',
                                     encoding="utf-8")
    register(tmp_path, "a", "a.jsonl", columns=ALPACA_COLUMNS)
    register(tmp_path, "b", "b.json")
    with pytest.raises(FormatError, match=r"a.jsonl row 1 \(line 3\): not valid JSON"):
        load_samples("a", tmp_path)
    with pytest.raises(FormatError, match=r"b.json, line 2 column 17: not valid JSON \(Expecting"):
        load_samples("b", tmp_path)


def test_skipped_rows_are_counted_and_reported_never_lost(tmp_path: Path) -> None:
    rows = [ALPACA, {**ALPACA, "output": 3}, ALPACA, {"instruction": "x"}]
    register(tmp_path, "d", write(tmp_path, "d.json", rows), columns=ALPACA_COLUMNS)
    with pytest.warns(UserWarning, match=r"1 rows rejected, first: .*row 1 of 'd', field 'output'"):
        samples, report = load_samples("d", tmp_path, on_error="skip")
    # an alpaca row without output is a prompt to generate from, not a bad row
    assert [s.kind for s in samples] == ["sft", "sft", "prompt"]
    assert report.read == 3 and len(report.rejected) == 1 and "3 samples read, 1 rows rejected" in str(report)


def test_a_meaningful_column_the_registry_does_not_declare_is_an_error(tmp_path: Path) -> None:
    register(tmp_path, "d", write(tmp_path, "d.json", [ALPACA]))  # no "history" in the columns
    with pytest.raises(FormatError, match=r"field 'system': present, but dataset_info.json does not declare it.*"
                                          r"add \"columns\": \{\"system\": \"system\"\}"):
        load_samples("d", tmp_path)


def test_the_registry_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    info = {"typo": {"file_name": "d.json", "colums": {}}, "hub": {"hf_hub_url": "org/data"},
            "fmt": {"file_name": "d.json", "formatting": "shargpt"}, "txt": {"file_name": "d.txt"},
            "tag": {"file_name": "d.json", "formatting": "sharegpt", "tags": {"role": "from"}}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    cases = {"typo": "key 'colums': unknown key; did you mean 'columns'", "hub": "the kit reads local files only",
             "fmt": "'shargpt' is not one of", "txt": "d.txt is not one of .json, .jsonl, .csv, .parquet",
             "tag": "unknown key 'role'; did you mean 'role_tag'", "d.json": "no dataset 'd.json'.*looks like a file"}
    for name, message in cases.items():
        with pytest.raises(RegistryError, match=message):
            lookup(name, tmp_path)
    with pytest.raises(RegistryError, match="dataset_info.json: not found"):
        lookup("d", tmp_path / "elsewhere")


def _numbered(tmp_path: Path, name: str, n: int) -> str:
    return register(tmp_path, name, write(tmp_path, f"{name}.jsonl", [
        {"instruction": f"{name}{i}", "output": "x"} for i in range(n)])).name


def test_mixing_concatenates_or_interleaves_by_probability(tmp_path: Path) -> None:
    _numbered(tmp_path, "a", 3), _numbered(tmp_path, "b", 40)

    def prompts(**options: Any) -> list[str]:
        return [s.prompt for s in iter_samples("a,b", tmp_path, **options)]

    assert prompts() == [f"a{i}" for i in range(3)] + [f"b{i}" for i in range(40)]
    under = prompts(mix_strategy="interleave_under", interleave_probs=[0.1, 0.9], seed=1)
    assert under == prompts(mix_strategy="interleave_under", interleave_probs=[0.1, 0.9], seed=1)
    assert [p for p in under if p[0] == "a"] == ["a0", "a1", "a2"]  # it stopped when a ran out ...
    assert sum(p[0] == "b" for p in under) > 3 * 3  # ... after drawing b about nine times as often
    over = prompts(mix_strategy="interleave_over", seed=1)
    assert {p for p in over if p[0] == "b"} == {f"b{i}" for i in range(40)}  # every b, and a over again
    assert sum(p[0] == "a" for p in over) > 3
    with pytest.raises(ValueError, match="one probability per dataset"):
        prompts(mix_strategy="interleave_under", interleave_probs=[0.5, 0.6])
    with pytest.raises(ValueError, match="concat' ignores it"):
        prompts(interleave_probs=[0.5, 0.5])


def test_streaming_yields_good_rows_before_a_bad_one_and_feeds_datasets(tmp_path: Path) -> None:
    register(tmp_path, "d", write(tmp_path, "d.jsonl", [ALPACA] * 3 + [{"instruction": 5}]),
             columns=ALPACA_COLUMNS)
    report = Report()
    stream = iter_samples("d", tmp_path, report=report)
    assert [fields(next(stream)) for _ in range(3)] == [EXPECTED] * 3 and report.read == 3
    with pytest.raises(FormatError, match="row 3"):
        next(stream)
    dataset = as_iterable_dataset(lambda: iter_samples("d", tmp_path, on_error="skip"))
    rows = list(dataset)
    assert len(rows) == 3 and rows[0]["history"] == [list(HISTORY[0])] and rows[0]["response"] == "No"
