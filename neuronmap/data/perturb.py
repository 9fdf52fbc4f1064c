"""Discrete text perturbations for robustness checks: character swaps and synonym swaps.

Token models have no continuous input a user can read, so besides the embedding-space attacks
of :class:`~neuronmap.analyses.adversarial.AdversarialRobustness` a probe text is also
perturbed the way people perturb text:

* :func:`char_swap` exchanges two adjacent inner letters of a word (``model`` -> ``mdoel``),
  the "swap" typo of Pruthi et al. (2019) and Belinkov & Bisk (2018), keeping the first and
  last letter so a human still reads the word;
* :func:`synonym_swap` replaces words by a synonym from :data:`SYNONYMS`, a small list written
  for this package (common English adjectives, verbs and nouns whose first sense the synonyms
  share), in the spirit of the word substitutions of Alzantot et al. (2018) without their
  language-model filter: the list is small and conservative instead.

Both are seeded per text (``seed`` and the text's position), so a probe set perturbs the same
way at every scheduled run and a flip rate over training compares like with like.

References:
    Belinkov & Bisk (2018). Synthetic and Natural Noise Both Break Neural Machine Translation. ICLR.
    Pruthi, Dhingra & Lipton (2019). Combating Adversarial Misspellings with Robust Word
    Recognition. ACL.
    Alzantot, Sharma, Elgohary, Ho, Srivastava & Chang (2018). Generating Natural Language
    Adversarial Examples. EMNLP.

Example:
    >>> char_swap("the model is robust", rate=1.0, seed=0) != "the model is robust"
    True
    >>> swapped = {f"a {w} {m}" for w in SYNONYMS["good"] for m in SYNONYMS["movie"]}
    >>> synonym_swap("a good movie", rate=1.0, seed=0) in swapped
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from neuronmap.errors import InvalidParameterError

__all__ = ["PERTURBATIONS", "SYNONYMS", "char_swap", "perturb_texts", "synonym_swap"]

Perturbation = Literal["char_swap", "synonym_swap"]
PERTURBATIONS: tuple[str, ...] = ("char_swap", "synonym_swap")
_WORD = re.compile(r"[A-Za-z]+")

SYNONYMS: dict[str, tuple[str, ...]] = {
    "good": ("fine", "great", "nice"), "bad": ("poor", "awful", "terrible"),
    "great": ("excellent", "superb", "wonderful"), "terrible": ("awful", "dreadful", "horrible"),
    "happy": ("glad", "cheerful", "joyful"), "sad": ("unhappy", "sorrowful", "gloomy"),
    "angry": ("furious", "mad", "irate"), "afraid": ("scared", "frightened", "fearful"),
    "big": ("large", "huge", "enormous"), "small": ("little", "tiny", "minor"),
    "fast": ("quick", "rapid", "swift"), "slow": ("sluggish", "unhurried", "leisurely"),
    "beautiful": ("lovely", "pretty", "gorgeous"), "ugly": ("unsightly", "hideous", "unattractive"),
    "smart": ("clever", "intelligent", "bright"), "stupid": ("foolish", "dumb", "silly"),
    "easy": ("simple", "effortless", "straightforward"), "hard": ("difficult", "tough", "demanding"),
    "funny": ("amusing", "humorous", "hilarious"), "boring": ("dull", "tedious", "monotonous"),
    "interesting": ("fascinating", "intriguing", "engaging"), "strange": ("odd", "weird", "peculiar"),
    "old": ("aged", "elderly", "ancient"), "new": ("fresh", "novel", "recent"),
    "rich": ("wealthy", "affluent", "prosperous"), "poor": ("needy", "impoverished", "destitute"),
    "quiet": ("silent", "calm", "hushed"), "loud": ("noisy", "deafening", "booming"),
    "wonderful": ("marvelous", "fantastic", "splendid"), "awful": ("dreadful", "terrible", "appalling"),
    "excellent": ("outstanding", "superb", "first-rate"), "nice": ("pleasant", "kind", "lovely"),
    "movie": ("film", "picture", "motion picture"), "film": ("movie", "picture", "feature"),
    "car": ("automobile", "vehicle", "auto"), "house": ("home", "residence", "dwelling"),
    "child": ("kid", "youngster", "youth"), "children": ("kids", "youngsters", "youths"),
    "friend": ("companion", "pal", "buddy"), "job": ("work", "occupation", "position"),
    "story": ("tale", "narrative", "account"), "book": ("volume", "novel", "publication"),
    "problem": ("issue", "difficulty", "trouble"), "idea": ("notion", "concept", "thought"),
    "city": ("town", "metropolis", "municipality"), "road": ("street", "route", "avenue"),
    "food": ("meal", "fare", "cuisine"), "money": ("cash", "funds", "currency"),
    "said": ("stated", "remarked", "declared"), "say": ("state", "tell", "declare"),
    "buy": ("purchase", "acquire", "get"), "begin": ("start", "commence", "initiate"),
    "start": ("begin", "commence", "launch"), "end": ("finish", "conclude", "stop"),
    "help": ("assist", "aid", "support"), "like": ("enjoy", "appreciate", "fancy"),
    "love": ("adore", "cherish", "treasure"), "hate": ("detest", "loathe", "despise"),
    "think": ("believe", "suppose", "reckon"), "want": ("wish", "desire", "need"),
    "look": ("glance", "peek", "gaze"), "walk": ("stroll", "stride", "wander"),
    "went": ("walked", "traveled", "headed"), "make": ("create", "build", "produce"),
    "show": ("display", "present", "reveal"), "try": ("attempt", "endeavor", "seek"),
    "very": ("really", "extremely", "truly"), "really": ("truly", "very", "genuinely"),
    "often": ("frequently", "regularly", "repeatedly"), "quickly": ("rapidly", "swiftly", "fast"),
}  # fmt: skip
"""Word -> synonyms (lower case). Small and hand-written for this package; extend it per task."""


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, 7])


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise InvalidParameterError(f"The 'rate' parameter must be a probability in [0, 1]; got {rate!r}.")


def char_swap(text: str, *, rate: float = 0.1, seed: int = 0, index: int = 0) -> str:
    """Swap two adjacent inner letters in each word of 4+ letters with probability ``rate``.

    Args:
        text: The text.
        rate: Probability that an eligible word is changed.
        seed: Seed; with ``index`` (the text's position) it fixes the perturbation.
        index: Position of the text in its set, so that equal texts at different positions can
            differ.

    Returns:
        The perturbed text (equal to ``text`` when no word is long enough or none was drawn).
    """
    _check_rate(rate)
    rng = _rng(seed, index)

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        if len(word) < 4 or rng.random() >= rate:
            return word
        i = int(rng.integers(1, len(word) - 2))  # an inner pair: never the first or last letter
        if word[i] == word[i + 1]:
            return word
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]

    return _WORD.sub(swap, text)


def synonym_swap(
    text: str,
    *,
    rate: float = 1.0,
    synonyms: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    index: int = 0,
) -> str:
    """Replace listed words by a random synonym with probability ``rate``, keeping capitalisation.

    Args:
        text: The text.
        rate: Probability that a listed word is replaced.
        synonyms: ``word -> synonyms`` (lower-case keys); default :data:`SYNONYMS`.
        seed, index: As in :func:`char_swap`.
    """
    _check_rate(rate)
    table = SYNONYMS if synonyms is None else {k.lower(): tuple(v) for k, v in synonyms.items()}
    rng = _rng(seed, index)

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        options = table.get(word.lower())
        if not options or rng.random() >= rate:
            return word
        choice = options[int(rng.integers(len(options)))]
        if word.isupper() and len(word) > 1:
            return choice.upper()
        return choice[0].upper() + choice[1:] if word[0].isupper() else choice

    return _WORD.sub(swap, text)


def perturb_texts(
    texts: Sequence[str], kind: Perturbation, *, rate: float | None = None, seed: int = 0
) -> list[str]:
    """Perturb every text with ``kind`` (``char_swap`` or ``synonym_swap``), seeded per position.

    ``rate`` defaults to 0.1 for ``char_swap`` and 1.0 for ``synonym_swap``.

    Raises:
        InvalidParameterError: Unknown ``kind``.
    """
    if kind == "char_swap":
        return [char_swap(t, rate=0.1 if rate is None else rate, seed=seed, index=i) for i, t in enumerate(texts)]
    if kind == "synonym_swap":
        return [synonym_swap(t, rate=1.0 if rate is None else rate, seed=seed, index=i) for i, t in enumerate(texts)]
    raise InvalidParameterError(f"Unknown perturbation {kind!r}; allowed: {list(PERTURBATIONS)}.")
