"""A local transformers causal LM as annotator (the pocket LLM by default, or any chat model).

    model, tokenizer = labkit.loader.load_model(), labkit.loader.load_tokenizer()
    annotator = LocalAnnotator(model, tokenizer, mode="token", cache="runs/answers.sqlite")
    frame = annotator.annotate(texts, task)

Prompts go through the tokenizer's chat template with the generation prompt (labkit.chat), so the
model sees exactly what it would see in a chat, and what back-tuning trains it on. Batches are
left-padded: every row then ends at its answer position, and the position ids are counted from
each row's first real token.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from labkit.annotate.base import Annotator, Messages, Mode, PromptFn, Reply
from labkit.annotate.cache import AnswerCache
from labkit.chat import CausalLM, generation_config, prompt_batch
from labkit.hardware import seeded
from labkit.prompts import NO, YES

# Tokens generated in each mode unless max_new_tokens says otherwise: "Yes"/"No" plus an end
# token; "0.72" is up to five tokens when every digit is its own token, plus an end token.
DEFAULT_NEW_TOKENS: dict[str, int] = {"hard": 4, "verbalized": 10, "token": 0}
# Elements hashed per weight tensor for the fingerprint: all of a small model, an even sample of
# a large one (a fine-tuning step changes every element of a matrix, so a sample sees it too).
FINGERPRINT_SAMPLE = 1 << 18


def answer_tokens(tokenizer: Any) -> dict[str, list[int]]:
    """The token ids that start a Yes or a No answer: {"Yes": [...], "No": [...]}.

    Variants "Yes", " Yes", "yes", " yes", "YES", " YES" (and the same for No) count when the
    tokenizer writes them as ONE token; a variant split into pieces is left out, because its
    first piece ("Y", " ") also starts other words; so is the unknown token.
    """
    found: dict[str, list[int]] = {}
    unknown = getattr(tokenizer, "unk_token_id", None)
    for word in (YES, NO):
        ids: list[int] = []
        for form in (word, word.lower(), word.upper()):
            for variant in (form, " " + form):
                encoded = tokenizer.encode(variant, add_special_tokens=False)
                if len(encoded) == 1 and encoded[0] != unknown and encoded[0] not in ids:
                    ids.append(encoded[0])
        if not ids:
            raise ValueError(
                f"{type(tokenizer).__name__}: no variant of {word!r} is a single token, so "
                "mode='token' cannot read P(Yes); use mode='verbalized' or mode='hard'."
            )
        found[word] = ids
    if set(found[YES]) & set(found[NO]):
        raise ValueError(f"{type(tokenizer).__name__}: a token id starts both Yes and No: {found}")
    return found


def model_fingerprint(model: CausalLM, tokenizer: Any) -> str:
    """A hash of what decides the model's answers: class, config, weights, vocabulary, template.

    Computed from the weights in memory (not a file), so a model fine-tuned in place (LoRA
    back-tuning) gets a new fingerprint and never reuses the old model's cached answers.
    """
    digest = hashlib.sha256()
    config = model.config.to_dict() if hasattr(model, "config") else {}
    for volatile in ("_name_or_path", "transformers_version"):
        config.pop(volatile, None)
    digest.update(type(model).__name__.encode())
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(str(tokenizer.chat_template).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // FINGERPRINT_SAMPLE)
        sample = flat[::step][:FINGERPRINT_SAMPLE].to(device="cpu", dtype=torch.float32)
        digest.update(sample.numpy().tobytes())
    return "local:" + digest.hexdigest()[:32]


def _accepts(model: CausalLM, argument: str) -> bool:
    """Whether the model's forward() takes `argument` (a PEFT wrapper passes it on to its base)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return argument in inspect.signature(base.forward).parameters


class LocalAnnotator(Annotator):
    """Annotate with a transformers causal LM held in memory.

    mode: "hard", "verbalized" or "token" (see labkit.annotate.base). max_new_tokens: tokens to
    generate (DEFAULT_NEW_TOKENS per mode). temperature: 0 decodes greedily; above 0 samples with
    torch seeded by `seed` for each batch. fingerprint: a fixed model id instead of the hash of
    the weights (e.g. "qwen2.5-7b-instruct@main" for a model too large to hash quickly).
    The model runs on the device it is on, in its own dtype (labkit.loader picks both).
    """

    def __init__(
        self,
        model: CausalLM,
        tokenizer: Any,
        mode: Mode = "token",
        *,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        batch_size: int = 8,
        cache: AnswerCache | str | Path | None = None,
        prompt: PromptFn | None = None,
        system: str | None = None,
        fingerprint: str | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(mode, cache=cache, batch_size=batch_size, prompt=prompt, system=system,
                         progress=progress)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens or DEFAULT_NEW_TOKENS[mode]
        self.temperature = temperature
        self.seed = seed
        self._fingerprint = fingerprint
        # Which ids count as Yes / No in token mode; shown to the student, e.g. {"Yes": [280]}.
        self.answer_tokens = answer_tokens(tokenizer) if mode == "token" else None
        # The model's positions, less the answer's: a longer prompt loses its start (None: no limit).
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = positions - self.max_new_tokens if isinstance(positions, int) else None

    def fingerprint(self) -> str:
        return self._fingerprint or model_fingerprint(self.model, self.tokenizer)

    def decoding(self) -> dict[str, Any]:
        if self.mode == "token":
            return {"mode": "token", "answer_tokens": self.answer_tokens, "max_length": self.max_length}
        sampling = {"temperature": self.temperature, "seed": self.seed} if self.temperature else {}
        return {"mode": self.mode, "max_new_tokens": self.max_new_tokens, "max_length": self.max_length,
                **sampling}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _reply(self, conversations: list[Messages]) -> list[Reply]:
        ids, mask, cut = prompt_batch(self.tokenizer, conversations, self.device, self.max_length)
        if cut:
            warnings.warn(f"{cut} of {len(conversations)} prompts are longer than the model's "
                          f"{self.max_length} positions (less the answer's): they lost their first tokens.",
                          stacklevel=4)
        was_training = self.model.training
        self.model.eval()  # no dropout: the same prompt gives the same answer
        try:
            with torch.inference_mode():
                if self.mode == "token":
                    return self._token_masses(ids, mask)
                return self._generate(ids, mask)
        finally:
            self.model.train(was_training)

    def _token_masses(self, ids: torch.Tensor, mask: torch.Tensor) -> list[Reply]:
        """P(Yes) and P(No) masses at the answer position, from one forward pass."""
        assert self.answer_tokens is not None
        extra: dict[str, Any] = {}
        if _accepts(self.model, "position_ids"):
            # Left padding: count positions from each row's first real token, as generate() does.
            extra["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        if _accepts(self.model, "logits_to_keep"):
            extra["logits_to_keep"] = 1  # only the last position's logits: saves vocab x length
        logits = self.model(input_ids=ids, attention_mask=mask, **extra).logits[:, -1, :]
        probs = torch.softmax(logits.float(), dim=-1)
        p_yes = probs[:, self.answer_tokens[YES]].sum(-1).tolist()
        p_no = probs[:, self.answer_tokens[NO]].sum(-1).tolist()
        return [{"p_yes": y, "p_no": n} for y, n in zip(p_yes, p_no, strict=True)]

    def _generate(self, ids: torch.Tensor, mask: torch.Tensor) -> list[Reply]:
        config = generation_config(self.model, self.tokenizer, self.max_new_tokens,
                                   self.temperature)
        with seeded(self.seed):
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        texts = self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        return [{"text": t.strip()} for t in texts]
