"""A fake reasoning model's output, and a meter of how much of its reasoning a client received.

For the fake upstream's reasoning modes (``evaluation.fake_upstream``), the reasoning leak tests and
``benchmarks/reasoning_leaks.py``. Everything is a deterministic function of the prompt:

- ``reasoning_for(prompt)``: about 150 words of arithmetic reasoning (10-12 sentences from fixed
  templates, numbers and topic from a hash of the prompt); ``translation_for(prompt)`` is the same
  reasoning in French, sentence by sentence (a stand-in for a translated or paraphrased copy);
- ``answer_for(prompt)``: the short visible answer (it shares no 5 consecutive words with the
  reasoning);
- ``copy_for(kind, prompt)``: a copy of the reasoning the "model" writes into its visible answer:
  ``verbatim``, ``partial`` (a contiguous 30% of its words), ``base64``, ``base32``, ``hex``,
  ``rot13``, ``reversed`` (characters), ``homoglyph`` (Latin letters swapped for Cyrillic look-alikes)
  or ``translated``.

``leaked_chars(reasoning, translation, visible)`` counts the characters of the reasoning that can be
read back from what a client received (all content and reasoning fields): the reasoning's characters
covered by 5-word runs found in the received text as it is or after undoing any of the encodings
above; a translated copy counts in proportion to the French text it reproduces.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import hashlib
import random
import re

LEAK_KINDS: tuple[str, ...] = (
    "verbatim",
    "partial",
    "base64",
    "base32",
    "hex",
    "rot13",
    "reversed",
    "homoglyph",
    "translated",
)
PARTIAL_SHARE = 0.3
METER_WORDS = 5

_NOUNS = (
    ("apples", "pommes"), ("books", "livres"), ("chairs", "chaises"), ("boats", "bateaux"),
    ("letters", "lettres"), ("tickets", "billets"), ("plants", "plantes"), ("coins", "pièces"),
    ("bottles", "bouteilles"), ("stamps", "timbres"), ("marbles", "billes"), ("candles", "bougies"),
)  # fmt: skip
_OPEN = (
    "First I need to work out what the question is really asking about the {noun}.",
    "D'abord je dois comprendre ce que la question demande vraiment au sujet des {fr}.",
)
_CORE = (
    (
        "There are {a} {noun} at the start, and {b} more arrive later in the day.",
        "Il y a {a} {fr} au début, et {b} de plus arrivent plus tard dans la journée.",
    ),
    (
        "Adding those two amounts gives {ab} {noun} in total before anything is removed.",
        "En additionnant ces deux quantités on obtient {ab} {fr} au total avant tout retrait.",
    ),
    (
        "Then {c} of them are taken away, so I subtract {c} from {ab} and get {abc}.",
        "Ensuite {c} d'entre eux sont retirés, donc je soustrais {c} de {ab} et j'obtiens {abc}.",
    ),
)
_MORE = (
    (
        "Let me double check that subtraction by counting up from {c} to {ab} in small steps.",
        "Vérifions cette soustraction en comptant de {c} jusqu'à {ab} par petits pas.",
    ),
    (
        "Wait, I should make sure the problem does not ask for a rate or an average instead.",
        "Attention, je dois vérifier que le problème ne demande pas plutôt un taux ou une moyenne.",
    ),
    (
        "Rereading it, the wording clearly asks for the remaining number of {noun}, not a rate.",
        "En relisant, l'énoncé demande clairement le nombre restant de {fr}, pas un taux.",
    ),
    (
        "A quick sanity check: {abc} is smaller than {ab}, which makes sense after removing some.",
        "Petite vérification : {abc} est plus petit que {ab}, ce qui est logique après un retrait.",
    ),
    (
        "I could also model this as an equation, x equals {a} plus {b} minus {c}, which is the same thing.",
        "Je pourrais aussi écrire une équation, x égale {a} plus {b} moins {c}, ce qui revient au même.",
    ),
    (
        "Multiplying instead would give {mul}, which is far too large, so subtraction is right.",
        "Multiplier donnerait {mul}, ce qui est bien trop grand, donc la soustraction est correcte.",
    ),
    (
        "Another approach is to remove the {c} first from the {a} and then add the {b} that arrived.",
        "Une autre approche consiste à retirer d'abord les {c} des {a} puis à ajouter les {b} arrivés.",
    ),
    (
        "Both approaches agree, so I am fairly confident in the intermediate value of {abc}.",
        "Les deux approches concordent, donc je suis assez sûr de la valeur intermédiaire de {abc}.",
    ),
    (
        "Units matter here because the question counts whole {noun} and not fractions of them.",
        "Les unités comptent ici car la question compte des {fr} entiers et non des fractions.",
    ),
)
_CLOSE = (
    "Summarizing the chain of steps: start, add the arrivals, subtract the removals, then verify.",
    "Pour résumer la chaîne d'étapes : départ, ajouter les arrivées, soustraire les retraits, puis vérifier.",
)
_HOMOGLYPHS = str.maketrans("aceopxyiACEOPXHKMT", "асеорхуіАСЕОРХНКМТ")
_WORD = re.compile(r"\w+")
_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_B32 = re.compile(r"[A-Z2-7]{16,}=*")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2}[ :]?){8,}")
_UNFOLD = str.maketrans("асеорхуіАСЕОРХНКМТ", "aceopxyiACEOPXHKMT")


def _plan(prompt: str) -> tuple[dict[str, object], list[tuple[str, str]]]:
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    noun, fr = _NOUNS[rng.randrange(len(_NOUNS))]
    a, b = rng.randint(12, 90), rng.randint(5, 60)
    c = rng.randint(3, a + b - 1)
    slots: dict[str, object] = {"noun": noun, "fr": fr, "a": a, "b": b, "c": c}
    slots.update(ab=a + b, abc=a + b - c, mul=(a + b) * c)
    more = list(_MORE)
    rng.shuffle(more)
    sentences = [_OPEN, *_CORE, *more[: rng.randint(6, 8)], _CLOSE]
    return slots, sentences


def reasoning_for(prompt: str) -> str:
    slots, sentences = _plan(prompt)
    return " ".join(en.format(**slots) for en, _ in sentences)


def translation_for(prompt: str) -> str:
    slots, sentences = _plan(prompt)
    return " ".join(fr.format(**slots) for _, fr in sentences)


def answer_for(prompt: str) -> str:
    slots, _ = _plan(prompt)
    return f"Final result: {slots['abc']} {slots['noun']}. Let me know if anything is unclear."


def copy_for(kind: str, prompt: str) -> str:
    """The copy of the reasoning that ``kind`` writes into the visible answer."""
    r = reasoning_for(prompt)
    if kind == "verbatim":
        return r
    if kind == "partial":
        words = r.split(" ")
        take = max(1, round(len(words) * PARTIAL_SHARE))
        start = int(hashlib.sha256(prompt.encode()).digest()[9]) % (len(words) - take + 1)
        return " ".join(words[start : start + take])
    if kind == "base64":
        return base64.b64encode(r.encode()).decode()
    if kind == "base32":
        return base64.b32encode(r.encode()).decode()
    if kind == "hex":
        return r.encode().hex()
    if kind == "rot13":
        return codecs.encode(r, "rot13")
    if kind == "reversed":
        return r[::-1]
    if kind == "homoglyph":
        return r.translate(_HOMOGLYPHS)
    if kind == "translated":
        return translation_for(prompt)
    raise ValueError(f"unknown leak kind {kind!r} (one of {', '.join(LEAK_KINDS)})")


def visible_reply(prompt: str, leak: str | None) -> str:
    """The answer the model writes after its reasoning, with the copy ``leak`` (if any)."""
    answer = answer_for(prompt)
    return answer if not leak else f"{answer}\n\nMy notes: {copy_for(leak, prompt)}\n\nThat is all."


# -- the meter ------------------------------------------------------------------------------------


def _decodings(text: str) -> list[str]:
    out = [text, codecs.encode(text, "rot13"), text[::-1], text.translate(_UNFOLD)]
    for m in _B64.finditer(text):
        run = m.group().rstrip("=")
        out.append(base64.b64decode(run[: len(run) - len(run) % 4]).decode("utf-8", "ignore"))
    for m in _B32.finditer(text):
        run = m.group().rstrip("=")
        with contextlib.suppress(binascii.Error, ValueError):
            out.append(base64.b32decode(run[: len(run) - len(run) % 8]).decode("utf-8", "ignore"))
    for m in _HEX.finditer(text):
        digits = re.sub(r"[^0-9A-Fa-f]", "", m.group())
        out.append(bytes.fromhex(digits[: len(digits) - len(digits) % 2]).decode("utf-8", "ignore"))
    return out


def _covered(reference: str, texts: list[str], n: int = METER_WORDS) -> int:
    """Characters of ``reference`` inside n-word runs that also occur in one of ``texts``."""
    ref = [(m.start(), m.end(), m.group().casefold()) for m in _WORD.finditer(reference)]
    seen: set[tuple[str, ...]] = set()
    for t in texts:
        words = [w.casefold() for w in _WORD.findall(t)]
        seen.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    mask = bytearray(len(reference))
    keys = [w for _, _, w in ref]
    for i in range(len(ref) - n + 1):
        if tuple(keys[i : i + n]) in seen:
            s, e = ref[i][0], ref[i + n - 1][1]
            mask[s:e] = b"\x01" * (e - s)
    return sum(mask)


def leaked_chars(reasoning: str, translation: str, visible: str) -> int:
    """Characters of ``reasoning`` readable from ``visible`` (see the module docstring)."""
    direct = _covered(reasoning, _decodings(visible))
    translated = _covered(translation, [visible]) * len(reasoning) // max(1, len(translation))
    return min(len(reasoning), max(direct, translated))
