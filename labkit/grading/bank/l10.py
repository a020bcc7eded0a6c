"""Exercises of lesson 10 (evaluation and the board): the option a multiple-choice question picks by
summed and by per-character log-likelihood (lm-evaluation-harness's acc and acc_norm, as
labkit.evaluation scores them), ROUGE-L as rouge-score computes it, and corpus BLEU as sacrebleu
computes it on whitespace tokens without smoothing.

The references import what they check against when they run: every check() loads the whole bank.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from labkit.grading.exercise import Case, Exercise, case, close

# The worker imports what the notebook imports (torch, transformers, the kit's evaluation) before the
# first hidden case: on a busy 2-core machine that alone can pass the default 30 s (lessons 06, 08, 09).
TIME_LIMIT_S = 90.0


# --- reference solutions --------------------------------------------------------------------------

def pick_option(token_logprobs: list[list[float]], options: list[str]) -> list[int]:
    """Reference: labkit.evaluation.pick (what multiple_choice picks) on each option's summed
    log-likelihood."""
    from labkit.evaluation import pick

    return list(pick([float(np.sum(tokens)) for tokens in token_logprobs], options))


def rouge_l(candidate: str, reference: str) -> float:
    """Reference: rouge-score's ROUGE-L F-measure (lower case, anything but a-z and 0-9 a space, no
    stemming; 0 when either side has no word)."""
    from rouge_score.rouge_scorer import RougeScorer

    scores = RougeScorer(["rougeL"]).score(reference, candidate)  # score(target, prediction)
    return float(scores["rougeL"].fmeasure)


def corpus_bleu(candidates: list[str], references: list[str], max_n: int = 4) -> float:
    """Reference: sacrebleu's corpus BLEU on whitespace tokens (tokenize="none", case kept), without
    smoothing, one reference per candidate, on 0-1. sacrebleu.corpus_bleu takes no max_ngram_order:
    the BLEU class does. Its brevity penalty applies when c < r (c = r gives exp(0) = 1 either way);
    it answers 0 when any n-gram order has no match or no candidate n-gram, and when c = 0: the hidden
    cases always have candidate n-grams of every order (so no 0/0), and some have a precision of 0."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="none", smooth_method="none", force=True, max_ngram_order=max_n)
    return float(bleu.corpus_score(list(candidates), [list(references)]).score / 100)


# --- hidden cases: 10.pick ------------------------------------------------------------------------

OPTION_POOL = (
    "Age", "BMI", "None", "Glucose", "Obesity", "Family history", "High glucose", "Age over 45",
    "Plasma glucose above 140 mg/dL", "BMI above 30", "Many pregnancies", "Blood pressure above 90",
    "A diabetes pedigree function above 0.5", "No finding points to diabetes",
    "Insulin above 200 two hours after glucose", "Skin fold thickness above 35 mm",
)


def _dyadic_tokens(rng: np.random.Generator, total: float, n: int) -> list[float]:
    """n log-probabilities in multiples of 1/8 that sum to `total` exactly, in any order."""
    eighths = int(round(-total * 8))
    cuts = np.sort(rng.choice(np.arange(1, eighths), size=n - 1, replace=False))
    parts = np.diff(np.concatenate([[0], cuts, [eighths]]))
    return [-float(k) / 8 for k in parts]


def _distinct(values: list[float], gap: float) -> bool:
    ordered = sorted(values)
    return all(b - a > gap for a, b in zip(ordered, ordered[1:], strict=False))


def _random_question(rng: np.random.Generator, n_options: int) -> Case:
    """Options from the pool, token counts unrelated to their lengths, no near-ties."""
    while True:
        options = [str(o) for o in rng.choice(OPTION_POOL, size=n_options, replace=False)]
        tokens = [(-rng.uniform(0.05, 2.5, size=int(rng.integers(1, 9)))).round(3).tolist() for _ in options]
        sums = [sum(t) for t in tokens]
        per_char = [s / len(o) for s, o in zip(sums, options, strict=True)]
        if _distinct(sums, 1e-6) and _distinct(per_char, 1e-6):
            return case(tokens, options)


def _disagreeing_question(rng: np.random.Generator, n_options: int) -> Case:
    """A short option likeliest in sum, a long one likeliest per character, placed at random."""
    options = [str(rng.choice(["Age", "BMI", "None"])),
               str(rng.choice([o for o in OPTION_POOL if len(o) > 20]))]
    middling = [o for o in OPTION_POOL if 5 <= len(o) <= 20 and o not in options]
    options += [str(o) for o in rng.choice(middling, size=n_options - 2, replace=False)]
    while True:
        tokens = [(-rng.uniform(0.1, 1.0, size=int(rng.integers(1, 7)))).round(3).tolist() for _ in options]
        sums = [sum(t) for t in tokens]
        per_char = [s / len(o) for s, o in zip(sums, options, strict=True)]
        if (np.argmax(sums) == 0 and np.argmax(per_char) == 1
                and _distinct(sums, 1e-6) and _distinct(per_char, 1e-6)):
            order = rng.permutation(n_options)
            return case([tokens[i] for i in order], [options[i] for i in order])


def _tied_question(rng: np.random.Generator, by: str) -> Case:
    """Two options tie exactly for the lead, by sum or per character (lengths 4, 8 or 16 characters and
    log-probabilities in eighths, exact in any order of summation): the first one is picked."""
    texts = {4: ["Age.", "BMI.", "None"], 8: ["Glucose.", "Obesity.", "Old age."],
             16: ["Glucose over 140", "Age well over 45", "BMI is above 30."]}
    if by == "sum":
        lengths, sums = [8, 4, 16, 4], [-3.0, -5.0, -3.0, -6.0]  # 0 and 2 tie in sum; 2 leads per char
    else:
        lengths, sums = [4, 16, 8, 16], [-1.0, -4.0, -4.5, -7.0]  # 0 and 1 tie per char; 0 leads in sum
    order = rng.permutation(4)
    pool = {n: list(rng.permutation(texts[n])) for n in texts}
    options = [str(pool[lengths[i]].pop()) for i in order]
    tokens = [_dyadic_tokens(rng, sums[i], int(rng.integers(1, 5))) for i in order]
    return case(tokens, options)


def _normalizations_disagree(rng: np.random.Generator) -> Case:
    """Per character, per word and per token: three different picks, none the pick by sum."""
    while True:
        question = _random_question(rng, 5)
        tokens, options = question.args
        sums = [sum(t) for t in tokens]
        per_char = [s / len(o) for s, o in zip(sums, options, strict=True)]
        per_word = [s / len(o.split()) for s, o in zip(sums, options, strict=True)]
        per_token = [s / len(t) for s, t in zip(sums, tokens, strict=True)]
        picks = {int(np.argmax(v)) for v in (sums, per_char, per_word, per_token)}
        if len(picks) == 4:
            return question


def _hidden_pick(rng: np.random.Generator) -> list[Case]:
    cases = [_tied_question(rng, "sum"), _tied_question(rng, "char"), _normalizations_disagree(rng)]
    cases += [_disagreeing_question(rng, int(n)) for n in rng.integers(2, 6, size=3)]
    cases += [_random_question(rng, int(n)) for n in (2, 3, 4, 4, 5)]
    # an empty option (the model's end of turn alone) counts one character, and here it leads per character
    options = ["", *[str(o) for o in rng.choice(OPTION_POOL[8:], size=3, replace=False)]]
    tokens = [[-round(float(rng.uniform(0.005, 0.02)), 3)]]
    tokens += [(-rng.uniform(0.3, 0.6, size=4)).round(3).tolist() for _ in options[1:]]
    cases.append(case(tokens, options))
    return cases


# --- hidden cases: 10.rouge_l ---------------------------------------------------------------------

WORDS = ("the", "patient", "glucose", "is", "high", "bmi", "above", "30", "age", "over", "45", "blood",
         "pressure", "normal", "and", "insulin", "point", "finding", "diabetes", "no", "to", "of")
PUNCTUATION = (",", ".", "!", "?", ";", ":", ")", "'s", "-")


def _render(rng: np.random.Generator, words: list[str], noisy: bool) -> str:
    """Words joined by spaces; when noisy, in random case, with punctuation and odd white space."""
    if not noisy or not words:
        return " ".join(words)
    out = []
    for word in words:
        word = str(rng.choice([word, word.upper(), word.capitalize()]))
        if rng.random() < 0.3:
            word += str(rng.choice(PUNCTUATION))
        if rng.random() < 0.1:
            word = "(" + word
        out.append(word)
    seps = [str(s) for s in rng.choice([" ", " ", " ", "  ", "\n", "\t", " - ", "/"], size=len(out))]
    return "".join(w + s for w, s in zip(out, [*seps[:-1], ""], strict=True))


def _edited(rng: np.random.Generator, words: list[str]) -> list[str]:
    """Words dropped, inserted, pluralized and one pair swapped: an answer near the reference."""
    out = []
    for word in words:
        if rng.random() < 0.2:
            continue
        if rng.random() < 0.15 and len(word) > 3:
            word += "s"  # "findings" is not "finding" without a stemmer
        out.append(word)
        if rng.random() < 0.2:
            out.append(str(rng.choice(WORDS)))
    if len(out) > 3:
        i = int(rng.integers(len(out) - 1))
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _words(rng: np.random.Generator, n: int, vocabulary: int = len(WORDS)) -> list[str]:
    return [str(w) for w in rng.choice(WORDS[:vocabulary], size=n)]


def _hidden_rouge(rng: np.random.Generator) -> list[Case]:
    cases = []
    reference = _words(rng, int(rng.integers(5, 9)))
    cases.append(case(_render(rng, [w.upper() if i % 2 else w.capitalize() for i, w in enumerate(reference)],
                              False), " ".join(reference)))  # the same words, another case: 1.0
    reference = _words(rng, int(rng.integers(6, 10)))
    cases.append(case(_render(rng, reference, True), _render(rng, _edited(rng, reference), True)))
    stems = [str(w) for w in rng.choice(["finding", "point", "patient", "insulin", "pressure", "reading"],
                                         size=int(rng.integers(4, 7)))]
    plural = [w + "s" if i % 2 == 0 else w for i, w in enumerate(stems)]
    cases.append(case(" ".join(plural), " ".join(stems)))  # "findings" is not "finding" without a stemmer
    cases.append(case("BMI>30, age>=45; glucose: 150mg/dL (high)!",
                      str(rng.choice(["bmi 30 age 45 glucose 150mg dl high", "Glucose 150 mg/dL is high",
                                      "age 45 and bmi 30"]))))
    distinct = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(5, 8)), replace=False)]
    cases.append(case(" ".join(distinct[::-1]), " ".join(distinct)))  # all words shared, one in order
    word, other = (str(w) for w in rng.choice(WORDS, size=2, replace=False))
    repeats = int(rng.integers(3, 6))
    # a word repeated: the LCS counts it once here, a bag of words as often as the other side has it
    cases.append(case(" ".join([word] * repeats + [other]), f"{other} is {word}"))
    reference = _words(rng, int(rng.integers(10, 15)))
    keep = np.sort(rng.choice(len(reference), size=3, replace=False))
    short = [reference[i] for i in keep]
    cases.append(case(" ".join(short), " ".join(reference)))  # precision 1, recall < 1/3
    cases.append(case(" ".join(reference), " ".join(short)))  # the other way round
    gapped = [w if i % 2 == 0 else "xx" for i, w in enumerate(reference)]
    cases.append(case(" ".join(gapped), " ".join(reference)))  # a subsequence, no long common substring
    for _ in range(4):
        reference = _words(rng, int(rng.integers(4, 16)), vocabulary=int(rng.integers(6, len(WORDS))))
        candidate = _render(rng, _edited(rng, reference), True)
        cases.append(case(candidate, _render(rng, reference, bool(rng.random() < 0.5))))
    sentence = _render(rng, _words(rng, 5), True)
    cases += [case("", sentence), case(sentence, ""), case("?! -- ...", sentence), case("", "")]
    return cases


# --- hidden cases: 10.bleu ------------------------------------------------------------------------

# rule texts in the words of the pocket LLM's explanations, tokenized (punctuation apart), with case
SENTENCES = (
    "Obesity ( body mass index of 30 kg/m2 or more ) raises the risk of type 2 diabetes further .",
    "Overweight ( body mass index of 25 kg/m2 or more ) is a risk factor for type 2 diabetes and a "
    "reason to test for it .",
    "A 2-hour plasma glucose of 140 to 199 mg/dL during an oral glucose tolerance test is impaired "
    "glucose tolerance ( prediabetes ) .",
    "A diabetes pedigree function above 0.5 reflects diabetes in close relatives , a known risk factor "
    "for type 2 diabetes .",
    "Testing for diabetes should begin at age 35 years because the risk rises with age .",
    "A strong family history of diabetes ( first-degree relatives ) raises the risk of type 2 diabetes .",
    "Hypertension ( 140/90 mm Hg or more ) is a risk factor for type 2 diabetes .",
    "None of the findings in this record is a textbook sign of diabetes .",
    "The glucose of 162 mg/dL is above 140 and the BMI of 33.6 is above 30 .",
    "Women with four or more pregnancies have a modestly higher risk of type 2 diabetes .",
)
FILLERS = ("also", "clearly", "indeed", "likely", "overall", "so", "then", "here")  # in no sentence
SEPARATORS = ("  ", "\t", " \n", "   ")  # white space that str.split() takes and split(" ") does not


def _ngrams(words: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


Corpus = tuple[list[list[str]], list[list[str]]]  # candidates' and references' words


def _counts(candidates: list[list[str]], references: list[list[str]],
            max_n: int) -> tuple[list[int], list[int]]:
    """Clipped matches and candidate n-grams of each order 1..max_n, summed over the corpus (to draw
    cases, not to grade: the reference is sacrebleu's)."""
    matches, totals = [0] * max_n, [0] * max_n
    for candidate, reference in zip(candidates, references, strict=True):
        for n in range(1, max_n + 1):
            mine = _ngrams(candidate, n)
            totals[n - 1] += sum(mine.values())
            matches[n - 1] += sum((mine & _ngrams(reference, n)).values())
    return matches, totals


def _bleu_case(candidates: list[list[str]], references: list[list[str]], max_n: int | None = None,
               join: Callable[[list[str]], str] = " ".join) -> Case:
    """A corpus with candidate n-grams of every order up to max_n: BLEU is defined (no 0/0)."""
    _, totals = _counts(candidates, references, max_n or 4)
    assert min(totals) > 0, "a hidden case without candidate n-grams of some order"
    texts = [join(c) for c in candidates], [join(r) for r in references]
    return case(*texts) if max_n is None else case(*texts, max_n=max_n)


def _references(rng: np.random.Generator, n: int) -> list[list[str]]:
    """n different sentences, about half of them cut to a window of 8 words or more."""
    out = []
    for index in rng.choice(len(SENTENCES), size=n, replace=False):
        words = SENTENCES[index].split()
        if rng.random() < 0.5:
            length = int(rng.integers(8, len(words) + 1))
            start = int(rng.integers(0, len(words) - length + 1))
            words = words[start:start + length]
        out.append(words)
    return out


def _bleu_edited(rng: np.random.Generator, words: list[str]) -> list[str]:
    """Words dropped, words inserted (fillers, or words of the sentence again) and one pair swapped."""
    out = []
    for word in words:
        if rng.random() < 0.15:
            continue
        out.append(word)
        if rng.random() < 0.15:
            out.append(str(rng.choice([*FILLERS, *words])))
    if len(out) > 3 and rng.random() < 0.5:
        i = int(rng.integers(len(out) - 1))
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _matched_corpus(rng: np.random.Generator, n: int, max_n: int = 4) -> Corpus:
    """Edited candidates with matches of every order up to max_n (every precision above 0)."""
    while True:
        references = _references(rng, n)
        candidates = [_bleu_edited(rng, r) for r in references]
        if min(_counts(candidates, references, max_n)[0]) > 0:
            return candidates, references


def _flip_case(word: str) -> str:
    return word.lower() if word != word.lower() else word.capitalize()


def _over_counted(rng: np.random.Generator) -> Case:
    """A word repeated beyond its count in the reference: clipped, the extra copies match nothing."""
    while True:
        candidates, references = _matched_corpus(rng, int(rng.integers(2, 4)))
        word = str(rng.choice(references[0]))
        extra = references[0].count(word) - candidates[0].count(word) + int(rng.integers(1, 4))
        candidates[0] = candidates[0] + [word] * max(extra, 1)
        if min(_counts(candidates, references, 4)[0]) > 0:
            return _bleu_case(candidates, references)


def _with_a_fragment(rng: np.random.Generator) -> Case:
    """A fragment without 4-grams beside long sentences: its sentence BLEU is 0, the corpus counts it."""
    candidates, references = _matched_corpus(rng, int(rng.integers(2, 4)))
    fragment = _references(rng, 1)[0]
    start = int(rng.integers(0, len(fragment) - 2))
    candidates.insert(1, fragment[start:start + int(rng.integers(2, 4))])
    references.insert(1, fragment)
    return _bleu_case(candidates, references)


def _prefixes(rng: np.random.Generator) -> Case:
    """Every candidate a prefix of its reference: every precision is 1, BLEU is the brevity penalty."""
    references = _references(rng, int(rng.integers(2, 5)))
    return _bleu_case([r[:int(rng.integers(4, len(r)))] for r in references], references)


def _padded(rng: np.random.Generator) -> Case:
    """Fillers put in: the candidates are longer than the references, so no brevity penalty."""
    references = _references(rng, int(rng.integers(2, 5)))
    candidates = []
    for reference in references:
        candidate = list(reference)
        for _ in range(int(rng.integers(1, 4))):
            candidate.insert(int(rng.integers(0, len(candidate) + 1)), str(rng.choice(FILLERS)))
        candidates.append(candidate)
    return _bleu_case(candidates, references)


def _other_case(rng: np.random.Generator) -> Case:
    """One or two words per candidate in the other case: "obesity" does not match "Obesity"."""
    while True:
        references = _references(rng, int(rng.integers(2, 4)))
        candidates = []
        for reference in references:
            candidate = list(reference)
            flippable = [i for i, w in enumerate(candidate) if _flip_case(w) != w]
            for i in rng.choice(flippable, size=min(len(flippable), int(rng.integers(1, 3))), replace=False):
                candidate[i] = _flip_case(candidate[i])
            candidates.append(candidate)
        if min(_counts(candidates, references, 4)[0]) > 0:
            return _bleu_case(candidates, references)


def _trigram_runs(rng: np.random.Generator) -> Case:
    """Runs of three reference words between fillers: trigrams match, no 4-gram does, so BLEU is 0."""
    references = _references(rng, int(rng.integers(2, 4)))
    candidates = []
    for reference in references:
        candidate: list[str] = []
        for _ in range(int(rng.integers(2, 4))):
            start = int(rng.integers(0, len(reference) - 2))
            candidate += [*reference[start:start + 3], str(rng.choice(FILLERS))]
        candidates.append(candidate)
    return _bleu_case(candidates, references)


def _borrowed_word(rng: np.random.Generator) -> Case:
    """A candidate that takes a word of the other sentence's reference: it matches nothing in its own."""
    while True:
        candidates, references = _matched_corpus(rng, 2)
        borrowed = [w for w in references[1] if w not in references[0]]
        if not borrowed:
            continue
        word = str(rng.choice(borrowed))
        candidates[0].insert(int(rng.integers(0, len(candidates[0]) + 1)), word)
        candidates[1] = [w for w in candidates[1] if w != word]
        if min(_counts(candidates, references, 4)[0]) > 0:
            return _bleu_case(candidates, references)


def _odd_spaces(rng: np.random.Generator) -> Case:
    """Tokens apart by tabs, new lines and runs of spaces: str.split() takes any white space."""

    def spaced(words: list[str]) -> str:
        gaps = [str(rng.choice([" ", " ", *SEPARATORS])) for _ in words[1:]]
        gaps[int(rng.integers(len(gaps)))] = str(rng.choice(SEPARATORS))
        return "".join(w + g for w, g in zip(words, [*gaps, ""], strict=True))

    return _bleu_case(*_matched_corpus(rng, int(rng.integers(2, 4))), join=spaced)


def _empty_lines(rng: np.random.Generator) -> Case:
    """An empty candidate (the model said nothing) and an empty reference, in a corpus with n-grams."""
    candidates, references = _matched_corpus(rng, int(rng.integers(2, 4)))
    empty = _references(rng, 1)[0]
    return _bleu_case([*candidates, [], _bleu_edited(rng, empty)], [*references, empty, []])


def _hidden_bleu(rng: np.random.Generator) -> list[Case]:
    cases = [draw(rng) for draw in (_over_counted, _with_a_fragment, _prefixes, _padded, _other_case,
                                    _trigram_runs, _borrowed_word, _odd_spaces, _empty_lines)]
    # other orders: unigrams only (BP * p1), up to bigrams, up to trigrams
    cases += [_bleu_case(*_matched_corpus(rng, int(rng.integers(2, 6)), n), max_n=n) for n in (1, 2, 3)]
    references = _references(rng, int(rng.integers(1, 4)))
    cases.append(_bleu_case(references, references))  # the references themselves: 1.0
    cases += [_bleu_case(*_matched_corpus(rng, n)) for n in (1, 3, 5, 8)]
    return cases


EXERCISES = [
    Exercise(
        id="10.pick", function="pick_option", tier="warm-up", points=1,
        task="pick_option(token_logprobs, options) -> [by_sum, by_char]: for one multiple-choice question, "
             "token_logprobs[i] holds the log-probabilities of option i's tokens and options[i] its text; "
             "by_sum is the index of the largest summed log-likelihood, by_char the index of the largest "
             "summed log-likelihood divided by len(options[i]) characters (an empty option counts one "
             "character); ties go to the first index (lm-evaluation-harness's acc and acc_norm).",
        reference=pick_option,
        examples=(
            case([[-2.1, -0.4], [-1.9, -0.5], [-2.6, -0.7, -0.2], [-1.2, -1.5, -0.9, -0.3],
                  [-0.8, -1.1, -0.6, -0.9, -0.4], [-0.9, -0.6, -0.2, -0.5, -0.3, -0.4, -0.2, -0.5, -0.3]],
                 ["yes", "no", "maybe", "it depends", "not enough information",
                  "the glucose is above 140 mg/dL"]),
            case([[-1.0, -0.5], [-1.25, -0.25], [-2.0, -1.5], [-2.5], [-1.5, -1.0, -0.75],
                  [-1.5, -0.5, -0.5]],
                 ["High", "Low", "High glucose", "Normal", "High BMI", "High glucose and high BMI"]),
        ),
        hidden=_hidden_pick,
        compare=close(rtol=0, atol=0), time_limit_s=TIME_LIMIT_S,
    ),
    Exercise(
        id="10.rouge_l", function="rouge_l", tier="core", points=2,
        task="rouge_l(candidate, reference) -> float: ROUGE-L's F-measure, 2PR / (P + R) with "
             "P = LCS / candidate words and R = LCS / reference words, LCS the length of the longest "
             "common subsequence of words; words as rouge-score makes them: lower case, every character "
             "other than a-z and 0-9 a space, split on white space, no stemming; 0.0 when either text "
             "has no word.",
        reference=rouge_l,
        # 24/37 and 16/39: no hidden case has 37 or 39 words in all (their F would be 2 LCS / words)
        examples=(case("Glucose of 162 mg/dL is above 140, and a BMI of 33.6 is above 30: both point to "
                       "diabetes.", "The plasma glucose (162 mg/dL) is high and the BMI, 33.6, is above 30."),
                  case("Age over 45 and a BMI over 30 point to diabetes; the glucose is fine.",
                       "The patient is 52: her age is over 45; her BMI of 31.2 is over 30; glucose of "
                       "120 mg/dL is normal.")),
        hidden=_hidden_rouge,
        compare=close(rtol=1e-9, atol=1e-12), time_limit_s=TIME_LIMIT_S,
    ),
    Exercise(
        id="10.bleu", function="corpus_bleu", tier="stretch", points=3,
        task="corpus_bleu(candidates, references, max_n=4) -> float: corpus BLEU (Papineni et al. 2002) "
             "on 0-1 of candidates[i] against references[i] (one reference each), words by str.split(), "
             "case kept; p_n = clipped n-gram matches / candidate n-grams, both summed over the corpus "
             "(a candidate n-gram matches at most as often as its own reference has it), n = 1..max_n; "
             "BLEU = BP * exp(mean of log p_n), 0.0 when any p_n is 0 (no smoothing); BP = exp(1 - r/c) "
             "when the corpus's candidate length c is below its reference length r, else 1 (sacrebleu's "
             "BLEU with tokenize='none', smooth_method='none').",
        reference=corpus_bleu,
        examples=(
            case(["Obesity ( body mass index of 30 kg/m2 or more ) raises the risk of diabetes .",
                  "A diabetes pedigree function above 0.5 is a risk factor for type 2 diabetes ."],
                 ["Obesity ( body mass index of 30 kg/m2 or more ) raises the risk of type 2 diabetes "
                  "further .", "A diabetes pedigree function above 0.5 reflects diabetes in close relatives "
                  ", a known risk factor for type 2 diabetes ."]),
            case(["The glucose glucose of 162 mg/dL is high and the BMI is high .",
                  "no finding points to diabetes"],
                 ["The glucose of 162 mg/dL is above 140 .", "None of the findings points to diabetes ."],
                 max_n=2),
        ),
        hidden=_hidden_bleu,
        compare=close(rtol=1e-9, atol=1e-12), time_limit_s=TIME_LIMIT_S,
    ),
]
