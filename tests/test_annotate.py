"""Annotators: the three modes on a tiny local model, the cache (rerun, interrupt and resume),
the OpenAI client's retries and key handling, and records -> prompts."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import httpx2
import numpy as np
import openai
import pandas as pd
import pytest
import torch
from tiny_models import TASK, TEXTS, _chat_ids, tiny_chat_model  # tests/ is on sys.path
from tokenizers import Tokenizer, models
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from labkit.annotate import (
    Annotator,
    AnswerCache,
    LocalAnnotator,
    OpenAIAnnotator,
    answer_tokens,
    model_fingerprint,
    parse_probability,
)
from labkit.annotate.openai_client import Retry, public_url, retry_wait
from labkit.prompts import probability_prompt, yes_no_prompt


@pytest.fixture(scope="module")
def tiny() -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    return tiny_chat_model()


def _last_token_probs(model: Any, tokenizer: Any, text: str) -> torch.Tensor:
    """The next-token distribution for ONE unpadded Yes/No prompt."""
    with torch.no_grad():
        ids = _chat_ids(tokenizer, yes_no_prompt(text, TASK))
        return torch.softmax(model(input_ids=ids).logits[0, -1], dim=-1)


# ---------------------------------------------------------------- local model, three modes


def test_answer_tokens_are_single_token_variants(tiny: Any) -> None:
    _, tokenizer = tiny
    found = answer_tokens(tokenizer)
    # " yes", "YES", ... split into pieces in this tokenizer, so only "Yes" and "No" count.
    assert found == {"Yes": [tokenizer.convert_tokens_to_ids("Yes")],
                     "No": [tokenizer.convert_tokens_to_ids("No")]}
    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
        {"<unk>": 0, "maybe": 1}, unk_token="<unk>")), unk_token="<unk>")
    with pytest.raises(ValueError, match="mode='verbalized'"):
        answer_tokens(bare)


def test_token_mode_matches_one_unpadded_forward_pass_per_prompt(tiny: Any) -> None:
    model, tokenizer = tiny
    frame = LocalAnnotator(model, tokenizer, "token", batch_size=3, progress=False).annotate(
        TEXTS, TASK)
    yes, no = tokenizer.convert_tokens_to_ids("Yes"), tokenizer.convert_tokens_to_ids("No")
    for text, row in zip(TEXTS, frame.itertuples(), strict=True):
        probs = _last_token_probs(model, tokenizer, text)
        assert row.p_yes == pytest.approx(float(probs[yes]), rel=1e-4)
        assert row.p_no == pytest.approx(float(probs[no]), rel=1e-4)
        assert row.value == pytest.approx(float(probs[yes] / (probs[yes] + probs[no])), rel=1e-4)
    assert list(frame.columns) == ["prompt", "raw", "value", "reason", "p_yes", "p_no"]
    assert (frame["reason"] == "").all()
    assert frame["prompt"].tolist() == [yes_no_prompt(t, TASK) for t in TEXTS]
    assert 0 < frame["value"].min() < 0.5 < frame["value"].max() < 1  # the rig gives both answers


def test_a_prompt_longer_than_the_models_positions_loses_its_start_with_a_warning() -> None:
    model, tokenizer = tiny_chat_model()
    ids = _chat_ids(tokenizer, yes_no_prompt(TEXTS[0], TASK))
    keep = ids.shape[1] - 3
    model.config.max_position_embeddings = keep
    annotator = LocalAnnotator(model, tokenizer, "token", progress=False)
    with pytest.warns(UserWarning, match=f"1 of 2 prompts are longer than the model's {keep} positions"):
        frame = annotator.annotate([TEXTS[0], "age 1"], TASK)
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids[:, -keep:]).logits[0, -1], dim=-1)
    yes = tokenizer.convert_tokens_to_ids("Yes")
    assert frame["p_yes"][0] == pytest.approx(float(probs[yes]), rel=1e-4)
    assert annotator.decoding()["max_length"] == keep  # answers cut at another length are not reused


def test_token_mode_with_absolute_positions_needs_position_ids() -> None:
    """GPT-2 adds position embeddings: left padding would shift them without position_ids."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tokenizer = tiny_chat_model()
    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1,
                                       n_head=2, n_positions=256)).eval()
    batched = LocalAnnotator(model, tokenizer, "token", batch_size=8, progress=False)
    single = LocalAnnotator(model, tokenizer, "token", batch_size=1, progress=False)
    np.testing.assert_allclose(batched.annotate(TEXTS, TASK)["p_yes"],
                               single.annotate(TEXTS, TASK)["p_yes"], rtol=1e-4)


def test_hard_mode_generates_yes_or_no_in_line_with_token_mode(tiny: Any) -> None:
    model, tokenizer = tiny
    hard = LocalAnnotator(model, tokenizer, "hard", max_new_tokens=1, batch_size=3,
                          progress=False).annotate(TEXTS, TASK)
    token = LocalAnnotator(model, tokenizer, "token", progress=False).annotate(TEXTS, TASK)
    assert set(hard["raw"]) == {"Yes", "No"}
    # Greedy decoding picks the likelier of the two answer tokens, so the modes must agree.
    assert hard["value"].tolist() == (token["value"] > 0.5).astype(float).tolist()


def test_verbalized_mode_batched_generation_equals_one_prompt_at_a_time(tiny: Any) -> None:
    model, tokenizer = tiny
    annotator = LocalAnnotator(model, tokenizer, "verbalized", max_new_tokens=3, batch_size=4,
                               progress=False)
    with pytest.warns(UserWarning, match="missing"):  # the rigged model answers words, not numbers
        frame = annotator.annotate(TEXTS, TASK)
    for text, row in zip(TEXTS, frame.itertuples(), strict=True):
        ids = _chat_ids(tokenizer, probability_prompt(text, TASK))
        out = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert row.raw == expected
        assert row.reason == parse_probability(expected).reason != ""
        assert math.isnan(row.value)
    assert frame.attrs["n_missing"] == len(TEXTS)


def test_fingerprint_follows_the_weights_not_the_object(tiny: Any) -> None:
    model, tokenizer = tiny
    twin, _ = tiny_chat_model()
    assert model_fingerprint(model, tokenizer) == model_fingerprint(twin, tokenizer)
    with torch.no_grad():
        twin.model.layers[0].mlp.up_proj.weight[0, 0] += 0.5  # one fine-tuning step, in place
    assert model_fingerprint(model, tokenizer) != model_fingerprint(twin, tokenizer)


def test_a_lora_wrapped_model_annotates_like_its_base_until_trained(tiny: Any) -> None:
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    base = LocalAnnotator(model, tokenizer, "token", progress=False)
    wrapped = LocalAnnotator(get_peft_model(tiny_chat_model()[0], LoraConfig(
        r=2, target_modules=["q_proj", "v_proj"])), tokenizer, "token", batch_size=3,
        progress=False)
    # LoRA starts as a no-op (B = 0): same answers, but a new model, so a new cache entry
    np.testing.assert_allclose(wrapped.annotate(TEXTS, TASK)["value"],
                               base.annotate(TEXTS, TASK)["value"], rtol=1e-4)
    assert wrapped.fingerprint() != base.fingerprint()


def test_model_without_chat_template_is_refused(tiny: Any) -> None:
    model, tokenizer = tiny
    plain = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer,
                                    eos_token="</s>", pad_token="<pad>")
    with pytest.raises(ValueError, match="no chat template"):
        LocalAnnotator(model, plain, "hard", progress=False).annotate(TEXTS[:1], TASK)


# ---------------------------------------------------------------- the base class, with a fake


class ScriptedAnnotator(Annotator):
    """Answers from a script: record text -> answer; counts every prompt it is sent."""

    def __init__(self, answers: dict[str, str], mode: str = "verbalized", **kwargs: Any) -> None:
        super().__init__(mode, progress=False, **kwargs)  # type: ignore[arg-type]
        self.answers = answers
        self.sent: list[str] = []

    def fingerprint(self) -> str:
        return "scripted"

    def decoding(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def _reply(self, conversations: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
        replies = []
        for messages in conversations:
            prompt = messages[-1]["content"]
            self.sent.append(prompt)
            record = next(t for t in self.answers if prompt.startswith(t))
            replies.append({"text": self.answers[record]})
        return replies


def test_raw_answer_beside_parsed_value_and_reason() -> None:
    answers = {"a": "0.7", "b": "70%", "c": "very likely", "d": "1.3", "e": "Probability: .25"}
    with pytest.warns(UserWarning, match="2 of 5 answers are missing"):
        frame = ScriptedAnnotator(answers).annotate(list(answers), TASK)
    assert frame["raw"].tolist() == list(answers.values())
    np.testing.assert_allclose(frame["value"], [0.7, 0.7, np.nan, np.nan, 0.25])
    assert frame["reason"].tolist() == ["", "", "no number in the answer",
                                        "out of range [0, 1]: '1.3'", ""]
    assert frame.attrs == {"n_sent": 5, "n_cached": 0, "n_missing": 2}


def test_a_duplicate_record_is_asked_once() -> None:
    annotator = ScriptedAnnotator({"a": "Yes", "b": "No"}, mode="hard")
    frame = annotator.annotate(["a", "b", "a"], TASK)
    assert frame["value"].tolist() == [1.0, 0.0, 1.0]
    assert len(annotator.sent) == 2


def test_rerun_costs_nothing_and_the_cache_survives_a_restart(tmp_path: Any) -> None:
    answers = {t: f"0.{i}" for i, t in enumerate(TEXTS)}
    first = ScriptedAnnotator(answers, cache=tmp_path / "answers.sqlite")
    expected = first.annotate(TEXTS, TASK)
    first.cache.close()  # type: ignore[union-attr]
    again = ScriptedAnnotator(answers, cache=tmp_path / "answers.sqlite")
    frame = again.annotate(TEXTS, TASK)
    assert again.sent == []
    assert frame.attrs["n_cached"] == len(TEXTS) and frame.attrs["n_sent"] == 0
    pd.testing.assert_frame_equal(frame, expected)
    # Another decoding (here: another mode) is another question: nothing may come from the cache.
    other = ScriptedAnnotator(answers, mode="hard", cache=tmp_path / "answers.sqlite")
    with pytest.warns(UserWarning):
        other.annotate(TEXTS, TASK)
    assert len(other.sent) == len(TEXTS)


def _interrupt_after(annotator: Annotator, calls: int, sent: list[str]) -> None:
    """Make the annotator's backend record each prompt and raise KeyboardInterrupt on call
    number `calls` + 1, before that call is answered (as Ctrl-C would)."""
    reply = annotator._reply
    count = [0]

    def counting(conversations: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
        count[0] += 1
        if count[0] > calls:
            raise KeyboardInterrupt
        sent.extend(m[-1]["content"] for m in conversations)
        return reply(conversations)

    annotator._reply = counting  # type: ignore[method-assign]


@pytest.mark.parametrize("backend", ["scripted", "local"])
def test_interrupted_run_resumes_without_asking_twice(backend: str, tiny: Any,
                                                      tmp_path: Any) -> None:
    texts = TEXTS + [t + "\nBMI: 30 kg/m2" for t in TEXTS]  # 16 records, batches of 3

    def make(cache: Any) -> Annotator:
        if backend == "scripted":
            return ScriptedAnnotator({t: f"0.{i:02d}" for i, t in enumerate(texts)},
                                     batch_size=3, cache=cache)
        return LocalAnnotator(*tiny, "token", batch_size=3, cache=cache, progress=False)

    reference = make(None).annotate(texts, TASK)
    sent: list[str] = []
    interrupted = make(tmp_path / "cache.sqlite")
    _interrupt_after(interrupted, calls=2, sent=sent)
    with pytest.raises(KeyboardInterrupt):
        interrupted.annotate(texts, TASK)
    assert len(sent) == 6  # two batches answered and committed before the interruption
    resumed = make(tmp_path / "cache.sqlite")
    _interrupt_after(resumed, calls=10**6, sent=sent)
    frame = resumed.annotate(texts, TASK)
    assert sorted(sent) == sorted(frame["prompt"])  # every prompt sent exactly once in all
    assert frame.attrs["n_cached"] == 6 and frame.attrs["n_sent"] == 10
    pd.testing.assert_frame_equal(frame, reference, check_exact=True)


def test_annotate_split_serializes_the_records_of_a_dataset() -> None:
    from labkit.data import load, to_text

    ds = load("pima")
    records = ds.features("val")
    answers = {to_text(r, ds.schema): "0.5" for r in records.to_dict(orient="records")}
    frame = ScriptedAnnotator(answers).annotate_split(ds, "val")
    assert len(frame) == len(records)
    assert frame["prompt"].iloc[0] == probability_prompt(to_text(records.iloc[0], ds.schema),
                                                         ds.schema.task)


def test_cache_key_depends_on_model_decoding_and_messages(tmp_path: Any) -> None:
    from labkit.annotate.cache import make_request, request_key

    messages = [{"role": "user", "content": "x"}]
    base = request_key(make_request("m", {"mode": "hard"}, messages))
    assert base == request_key(make_request("m", {"mode": "hard"}, list(messages)))
    assert base != request_key(make_request("m2", {"mode": "hard"}, messages))
    assert base != request_key(make_request("m", {"mode": "hard", "max_tokens": 3}, messages))
    assert base != request_key(make_request("m", {"mode": "hard"},
                                            [{"role": "user", "content": "y"}]))
    cache = AnswerCache(tmp_path / "c.sqlite")
    cache.put_many([(base, make_request("m", {}, messages), {"text": "Yes"})])
    assert cache.get_many([base, "absent"]) == {base: {"text": "Yes"}} and len(cache) == 1


# ---------------------------------------------------------------- OpenAI client (no network)


def _completion(content: str = "0.7", top: list[tuple[str, float]] | None = None) -> dict:
    logprobs = None
    if top is not None:
        entries = [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]
        logprobs = {"content": [{**entries[0], "top_logprobs": entries}]}
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                         "message": {"role": "assistant", "content": content}}]}


def _mock_client(responses: list[httpx2.Response], seen: list[httpx2.Request]) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return responses.pop(0)

    return openai.OpenAI(base_url="http://user:pw@server.test/v1?token=q", api_key="sk-test",
                         max_retries=0, http_client=httpx2.Client(transport=httpx2.MockTransport(
                             handler)))


def test_openai_rate_limit_is_waited_out_then_answered() -> None:
    seen: list[httpx2.Request] = []
    limited = httpx2.Response(429, headers={"retry-after-ms": "5"},
                              json={"error": {"message": "slow down", "code": "rate_limit"}})
    responses = [limited, httpx2.Response(503, headers={"retry-after-ms": "5"}, json={}),
                 httpx2.Response(200, json=_completion("I'd say 0.70."))]
    annotator = OpenAIAnnotator("m", client=_mock_client(responses, seen), progress=False)
    frame = annotator.annotate(["a"], TASK)
    assert frame["value"].tolist() == [0.7] and len(seen) == 3


def test_openai_gives_up_after_max_retries_and_never_retries_used_up_quota() -> None:
    seen: list[httpx2.Request] = []
    limited = httpx2.Response(429, headers={"retry-after-ms": "1"}, json={})
    annotator = OpenAIAnnotator("m", client=_mock_client([limited] * 3, seen), retry=Retry(attempts=2),
                                progress=False)
    with pytest.raises(RuntimeError, match="RateLimitError after 3 attempts"):
        annotator.annotate(["a"], TASK)
    no_quota = httpx2.Response(429, json={"error": {"message": "quota",
                                                    "code": "insufficient_quota"}})
    seen.clear()
    annotator = OpenAIAnnotator("m", client=_mock_client([no_quota], seen), progress=False)
    with pytest.raises(RuntimeError, match="quota is used up"):
        annotator.annotate(["a"], TASK)
    assert len(seen) == 1


def test_in_flight_requests_overlap_keep_the_order_and_cache_what_arrived_before_an_error(
        tmp_path: Any) -> None:
    import threading

    lock, open_now, most = threading.Lock(), [0], [0]

    def handler(request: httpx2.Request) -> httpx2.Response:
        text = json.loads(request.read())["messages"][-1]["content"]
        with lock:
            open_now[0] += 1
            most[0] = max(most[0], open_now[0])
        time.sleep(0.05 if "r3" not in text else 0.2)  # r3 answers last
        with lock:
            open_now[0] -= 1
        if "broken" in text:
            return httpx2.Response(400, json={"error": {"message": "bad request"}})
        return httpx2.Response(200, json=_completion(f"0.{text.split('r')[-1][0]}"))

    client = openai.OpenAI(base_url="http://server.test/v1", api_key="k", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    texts = [f"r{i}" for i in range(1, 9)]
    annotator = OpenAIAnnotator("m", client=client, in_flight=4, cache=tmp_path / "c.sqlite",
                                progress=False, prompt=lambda text, task: text)
    frame = annotator.annotate(texts, TASK)
    assert frame["value"].tolist() == [i / 10 for i in range(1, 9)]  # the records' order
    assert most[0] == 4  # four open at once, never more
    with pytest.raises(openai.BadRequestError):
        annotator.annotate(["r9", "broken", "r9b"], TASK)
    assert annotator.annotate(["r9"], TASK).attrs["n_cached"] == 1  # answered before the error: kept
    with pytest.raises(ValueError, match="in_flight must be at least 1"):
        OpenAIAnnotator("m", client=client, in_flight=0)


def test_retry_wait_honours_retry_after_else_backs_off_exponentially() -> None:
    request = httpx2.Request("POST", "http://x")

    def error(headers: dict[str, str]) -> openai.RateLimitError:
        response = httpx2.Response(429, headers=headers, request=request)
        return openai.RateLimitError("limited", response=response, body=None)

    assert [retry_wait(error({}), a, 60) for a in range(4)] == [1, 2, 4, 8]
    assert retry_wait(error({}), 10, 60) == 60
    assert retry_wait(error({"retry-after": "7"}), 0, 60) == 7
    assert retry_wait(error({"retry-after-ms": "250"}), 3, 60) == 0.25
    assert retry_wait(openai.APIConnectionError(request=request), 2, 60) == 4


def test_openai_token_mode_sums_yes_and_no_variants_from_top_logprobs() -> None:
    top = [("Yes", math.log(0.5)), (" yes", math.log(0.1)), ("No", math.log(0.2)),
           ("Maybe", math.log(0.1))]
    seen: list[httpx2.Request] = []
    client = _mock_client([httpx2.Response(200, json=_completion("Yes", top)),
                           httpx2.Response(200, json=_completion("Yes", None))], seen)
    annotator = OpenAIAnnotator("m", "token", client=client, progress=False)
    frame = annotator.annotate(["a"], TASK)
    assert frame["p_yes"].iloc[0] == pytest.approx(0.6)
    assert frame["value"].iloc[0] == pytest.approx(0.6 / 0.8)
    body = seen[0].read().decode()
    assert '"logprobs":true' in body.replace(" ", "") and '"top_logprobs":20' in body.replace(" ",
                                                                                             "")
    with pytest.raises(RuntimeError, match="does not support mode='token'"):
        annotator.annotate(["b"], TASK)


def test_api_key_comes_from_the_environment_and_is_never_shown_or_stored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "sk-very-secret-value-123"
    monkeypatch.delenv("LABKIT_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="LABKIT_TEST_KEY is not set") as missing:
        OpenAIAnnotator("m", api_key_env="LABKIT_TEST_KEY")
    monkeypatch.setenv("LABKIT_TEST_KEY", secret)
    annotator = OpenAIAnnotator("m", "hard", base_url="http://server.test/v1",
                                api_key_env="LABKIT_TEST_KEY", cache=tmp_path / "c.sqlite",
                                progress=False)
    seen: list[httpx2.Request] = []
    annotator.client = annotator.client.with_options(http_client=httpx2.Client(
        transport=httpx2.MockTransport(lambda r: seen.append(r) or httpx2.Response(
            200, json=_completion("No")))))
    annotator.annotate(["a"], TASK)
    assert seen[0].headers["authorization"] == f"Bearer {secret}"  # the key is used ...
    shown = repr(annotator) + annotator.fingerprint() + str(missing.value)
    out = capsys.readouterr()
    assert secret not in shown + out.out + out.err  # ... but never printed
    assert secret.encode() not in (tmp_path / "c.sqlite").read_bytes()  # nor cached
    assert annotator.fingerprint() == "openai:http://server.test/v1:m"


def test_public_url_drops_credentials_query_and_trailing_slash() -> None:
    assert public_url("https://u:p@api.example.com:8443/v1/?key=abc#x") == (
        "https://api.example.com:8443/v1")
