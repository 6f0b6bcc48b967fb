"""Reasoning protection (``antidistill.hardening``), pure: tags split anywhere, reasoning fields,
copies of the reasoning in the answer (verbatim, partial, encoded), benign pass-through, the stream
window, summary mode. The leak meter is ``evaluation.fake_reasoning.leaked_chars``."""

from __future__ import annotations

import base64
import codecs
import random
from dataclasses import replace

import orjson
import pytest

from antidistill.backends.base import (
    ChatMessage,
    Choice,
    Chunk,
    Completion,
    GenerationRequest,
    SamplingParams,
    Usage,
)
from antidistill.evaluation.fake_reasoning import (
    LEAK_KINDS,
    answer_for,
    copy_for,
    leaked_chars,
    reasoning_for,
    translation_for,
    visible_reply,
)
from antidistill.gateway.render import ChunkRenderer, completion_body
from antidistill.hardening import REDACTED, ReasoningCorpus, ReasoningGuard, TagSplitter, summary
from antidistill.hardening.copies import trailing_run
from antidistill.policy import StripReasoningConfig

CFG = StripReasoningConfig()
SUMMARY = StripReasoningConfig(mode="summary")
PROMPT = "A shop had some apples in the morning; how many are left tonight?"
R = reasoning_for(PROMPT)
T = translation_for(PROMPT)
A = answer_for(PROMPT)
DETECTED = tuple(k for k in LEAK_KINDS if k != "translated")  # a translation is not recognized


def complete(text: str, reasoning: str | None = None, cfg: StripReasoningConfig = CFG) -> Choice:
    g = ReasoningGuard(cfg)
    return g.complete(Completion((Choice(0, text, "stop", reasoning),), Usage(1, 1))).choices[0]


def stream(
    pieces: list[str], reasoning: list[str] | None = None, cfg: StripReasoningConfig = CFG
) -> tuple[str, str, ReasoningGuard]:
    """Feed reasoning-field deltas, then text deltas, then the finish; (text, reasoning) sent."""
    g = ReasoningGuard(cfg)
    out: list[Chunk] = []
    for r in reasoning or []:
        out += g.feed(Chunk(0, "", reasoning=r))
    for p in pieces:
        out += g.feed(Chunk(0, p))
    out += g.feed(Chunk(0, "", finish_reason="stop"))
    out += g.feed(Chunk(usage=Usage(1, 1)))
    assert out[-1].usage is not None and out[-2].finish_reason == "stop"
    return "".join(c.text for c in out), "".join(c.reasoning or "" for c in out), g


def cut(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def random_cuts(text: str, rng: random.Random, most: int = 12) -> list[str]:
    out, i = [], 0
    while i < len(text):
        k = rng.randint(1, most)
        out.append(text[i : i + k])
        i += k
    return out


# tags -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag", ["think", "reasoning", "thought", "THINK", "Thinking"])
def test_a_tag_split_at_every_position_never_leaks(tag: str) -> None:
    text = f"<{tag}>{R}</{tag}>\n\n{A}"
    assert complete(text).text == A
    for i in range(len(text) + 1):
        got, _, g = stream([text[:i], text[i:]])
        assert got == A, i
        assert g.stats.reasoning_chars == len(R) and g.stats.blocks == 1
    for size in (1, 2, 3, 5, 7, 11):
        assert stream(cut(text, size))[0] == A


def test_three_way_splits_around_both_tags() -> None:
    text = f"Intro. <think>{R[:60]}</think> {A}"
    expected = complete(text).text
    assert expected == f"Intro.  {A}" and leaked_chars(R, T, expected) == 0
    opening, closing = text.index("<think>"), text.index("</think>")
    for i in range(opening - 2, opening + 9):
        for j in range(closing - 2, closing + 10):
            assert stream([text[:i], text[i:j], text[j:]])[0] == expected, (i, j)


def test_random_chunkings_of_several_blocks() -> None:
    rng = random.Random(7)
    text = f"<think>{R}</think>First. <reasoning>{T}</reasoning>Second <thought>x</thought>end"
    expected = complete(text).text
    assert expected == "First. Second end"
    for _ in range(300):
        assert stream(random_cuts(text, rng))[0] == expected


def test_the_splitter_holds_only_a_possible_tag() -> None:
    s = TagSplitter(["think"])
    assert s.feed("a < b and <th") == [("text", "a < b and ")] and s.held == 3
    assert s.feed("e end") == [("text", "<the end")] and s.held == 0
    assert s.feed("x </thi") == [("text", "x ")]
    assert s.feed("nk> y") == [("orphan", "</think>"), ("text", " y")]
    assert s.feed("<think>abc") == [("open", "<think>"), ("reasoning", "abc")] and s.inside
    assert s.feed("</") == [] and s.flush() == [("reasoning", "</")]


def test_an_unclosed_block_is_never_released() -> None:
    text = f"{A} <think>{R}"  # cut off by max_tokens inside its reasoning
    assert complete(text).text == f"{A} "
    for size in (1, 4, 9):
        got, _, g = stream(cut(text, size))
        assert got == f"{A} " and g.stats.unclosed_blocks == 1


def test_a_closing_tag_without_opening_tag() -> None:
    # JSON: the text before an orphan closing tag was reasoning (the chat template opened the block)
    assert complete(f"{R}</think>\n\n{A}").text == A
    # streams: with implicit_open nothing is released before the closing tag
    implicit = StripReasoningConfig(implicit_open=True)
    for size in (1, 5, 13):
        got, _, g = stream(cut(f"{R}</think>\n\n{A}", size), cfg=implicit)
        assert got == A and g.stats.escaped_chars == 0
    # without it, a stream cannot take back what it already sent before the tag: counted as escaped
    got, _, g = stream(cut(f"{R}</think>\n\n{A}", 5))
    assert g.stats.orphan_tags == 1 and g.stats.escaped_chars > 0


def test_a_second_block_closed_twice_is_removed_while_held() -> None:
    text = f"<think>{R}</think>Wait, more thoughts here.</think>{A}"
    assert complete(text).text == A
    assert stream(cut(text, 3))[0] == A  # the stray block is shorter than the window


# reasoning fields ---------------------------------------------------------------------------------
def test_reasoning_content_deltas_never_reach_the_client() -> None:
    g = ReasoningGuard(CFG)
    sent: list[Chunk] = []
    for piece in cut(R, 7):
        sent += g.feed(Chunk(0, "", reasoning=piece))
    assert sent == []  # nothing at all while the model reasons
    for piece in cut(A, 5):
        sent += g.feed(Chunk(0, piece))
    sent += g.feed(Chunk(0, "", finish_reason="stop"))
    assert all(c.reasoning is None for c in sent) and "".join(c.text for c in sent) == A
    assert g.stats.reasoning_chars == len(R)
    assert complete(A, reasoning=R) == Choice(0, A, "stop", None)


def test_summary_mode() -> None:
    n = summary(len(R))
    assert n == f"[reasoning withheld: {-(-len(R) // 4)} tokens]"
    assert complete(A, reasoning=R, cfg=SUMMARY) == Choice(0, A, "stop", n)
    text, reasoning, _ = stream(cut(A, 4), reasoning=cut(R, 9), cfg=SUMMARY)
    assert (text, reasoning) == (A, n)
    tagged = f"<think>{R}</think>\n\n{A}"
    assert complete(tagged, cfg=SUMMARY).text == f"<think>{n}</think>\n\n{A}"
    for size in (1, 6):
        assert stream(cut(tagged, size), cfg=SUMMARY)[0] == f"<think>{n}</think>\n\n{A}"
    assert complete(f"{A}<think>{R}", cfg=SUMMARY).text == f"{A}<think>{n}</think>"  # unclosed


# copies in the answer ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", DETECTED)
@pytest.mark.parametrize("carrier", ["tags", "field"])
def test_copies_are_redacted(kind: str, carrier: str) -> None:
    reply = visible_reply(PROMPT, kind)
    assert leaked_chars(R, T, reply) > 0.25 * len(R)  # the meter sees the copy
    text, field = (f"<think>{R}</think>\n\n{reply}", None) if carrier == "tags" else (reply, R)
    got = complete(text, field).text
    assert leaked_chars(R, T, got) == 0, got
    assert got.startswith(A) and got.endswith("That is all.") and REDACTED in got
    for size in (1, 3, 7, 64):
        sent, sent_r, g = stream(cut(text, size), None if field is None else cut(field, 11))
        assert leaked_chars(R, T, sent + sent_r) == 0, (size, sent)
        assert sent.startswith(A) and sent.endswith("That is all.") and g.stats.copies >= 1
        assert g.stats.escaped_chars == 0


def test_more_encodings_and_edits() -> None:
    words = R.split(" ")
    variants = {
        "word order reversed": " ".join(reversed(words)),
        "hex with spaces": " ".join(f"{b:02x}" for b in R.encode()),
        "hex 0x list": ",".join(f"0x{b:02X}" for b in R.encode()),
        "wrapped base64": "\n".join(cut(base64.b64encode(R.encode()).decode(), 76)),
        "url-safe base64": base64.urlsafe_b64encode(("<<??>>" + R).encode()).decode(),
        "every 9th word changed": " ".join("XX" if i % 9 == 8 else w for i, w in enumerate(words)),
        "zero-width spaces": "\u200b".join(R[:300]),
        "upper case": R.upper(),
        "rot13 of a part": codecs.encode(R[200:600], "rot13"),
    }
    for name, copy in variants.items():
        text = f"<think>{R}</think>{A}\n\n{copy}\n\nThat is all."
        for got in (complete(text).text, stream(cut(text, 5))[0]):
            assert REDACTED in got and got.startswith(A) and got.endswith("That is all."), name
            assert leaked_chars(R, T, got.replace("\u200b", "")) == 0, (name, got)


def test_a_translation_is_not_recognized() -> None:  # the documented miss
    text = f"<think>{R}</think>{visible_reply(PROMPT, 'translated')}"
    got = complete(text).text
    assert REDACTED not in got and leaked_chars(R, T, got) > 0.9 * len(R)


def test_short_restatements_are_kept() -> None:
    # the answer may repeat up to min_copy_words - 1 consecutive words of the reasoning
    words = R.split(" ")
    restated = " ".join(words[10:17])
    text = f"<think>{R}</think>{A} Indeed {restated} as said."
    assert complete(text).text == f"{A} Indeed {restated} as said."


def test_a_copy_before_the_reasoning_in_json() -> None:
    assert REDACTED in complete(f"{copy_for('base64', PROMPT)} <think>{R}</think>{A}").text


# benign answers ------------------------------------------------------------------------------------
BENIGN = (
    "Sure! If a < b and b < c then a < c. Tags like <b> or </i> and <thin> are fine; so is x<t.",
    "def f(x):\n    return x << 2  # <- shift\n",
    "A long one. " * 300,
    "Base64 of hello is aGVsbG8gd29ybGQ= and a hash is 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b.",
    "",
)


@pytest.mark.parametrize("text", BENIGN)
def test_benign_answers_pass_through_unchanged(text: str) -> None:
    result = Completion((Choice(0, text, "stop"), Choice(1, text + "!", "length")), Usage(3, 4))
    assert ReasoningGuard(CFG).complete(result) is result  # the very same object: byte-identical body
    for size in (1, 3, 8, 1000):
        g = ReasoningGuard(CFG)
        chunks = [Chunk(0, p) for p in cut(text, size)] + [Chunk(0, "", finish_reason="stop")]
        sent = [c for ch in chunks for c in g.feed(ch)]
        assert "".join(c.text for c in sent) == text
        # a chunk goes out as it is unless a "<" (a possible tag, held back) is in it or just before it
        plain, at = [], 0
        for c in chunks:
            if "<" not in text[max(0, at - 12) : at + len(c.text)]:
                plain.append(c)
            at += len(c.text)
        assert all(any(s is c for s in sent) for c in plain)
        assert g.stats.reasoning_chars == 0 and g.stats.max_held_chars == 0


def test_the_stream_window_bounds_what_is_held() -> None:
    cfg = StripReasoningConfig(window_chars=128)
    long_answer = " ".join(f"line {i} of a long and harmless answer." for i in range(200))
    g = ReasoningGuard(cfg)
    released_before_end = 0
    for c in g.feed(Chunk(0, f"<think>{R}</think>")):
        released_before_end += len(c.text)
    for piece in cut(long_answer, 3):
        for c in g.feed(Chunk(0, piece)):
            released_before_end += len(c.text)
        held = g._choices[0].pending
        assert len(held) <= 128 + 128 // 4 + 3  # window + check step + one piece
    assert released_before_end >= len(long_answer) - 128 - 32 - 3
    assert g.stats.max_held_chars <= 128 + 32 + 3
    rest = "".join(c.text for c in g.feed(Chunk(0, "", finish_reason="stop")))
    assert rest and long_answer.endswith(rest)


def test_an_encoded_run_is_held_until_it_ends() -> None:
    copy = base64.b64encode(R.encode()).decode()  # ~1,200 characters, longer than the window
    g = ReasoningGuard(CFG)
    g.feed(Chunk(0, f"<think>{R}</think>{A} "))
    sent = ""
    for piece in cut(copy, 4):
        sent += "".join(c.text for c in g.feed(Chunk(0, piece)))
        assert copy[:40] not in sent
    sent += "".join(c.text for c in g.feed(Chunk(0, " ok", finish_reason="stop")))
    assert sent == f"{A} {REDACTED} ok"


def test_n_choices_are_protected_separately() -> None:
    g = ReasoningGuard(CFG)
    text = f"<think>{R}</think>{A}"
    sent: list[Chunk] = []
    for p0, p1 in zip(cut(text, 4), cut(text, 4), strict=True):
        sent += g.feed(Chunk(0, p0)) + g.feed(Chunk(1, p1))
    sent += g.feed(Chunk(0, "", finish_reason="stop"))
    sent += g.feed(Chunk(usage=Usage(1, 1)))  # choice 1 never finished: flushed before the usage
    for i in (0, 1):
        assert "".join(c.text for c in sent if c.index == i and c.usage is None) == A


def test_the_trailing_run_rule() -> None:
    assert trailing_run("plain words only here and there") == 31
    b64 = base64.b64encode(R.encode()).decode()[:40]
    assert trailing_run(f"notes: {b64}") == 7
    assert trailing_run("bytes: 48 65 6c 6c 6f 20 77 6f 72 6c 64") == 7
    assert trailing_run("ok 48 65 6c 6c 6f then text") == 27  # ended: nothing to hold


def test_the_corpus_reads_words_cut_by_chunks() -> None:
    c = ReasoningCorpus(8, 10_000)
    for piece in cut(R, 3):
        c.add(piece)
    c.end_block()
    whole = ReasoningCorpus(8, 10_000)
    whole.add(R)
    whole.end_block()
    assert c.keys == whole.keys and len(c.keys) == 4 * (len(R.split()) - 7)
    assert c.find_copies(f"x {R[100:300]} y")


def test_guard_stats_and_detection_off() -> None:
    _, _, g = stream(cut(f"<think>{R}</think>{visible_reply(PROMPT, 'verbatim')}", 9))
    stats = g.stats.as_dict()
    assert stats["mode"] == "remove" and stats["blocks"] == 1 and stats["copies"] == 1
    assert stats["redacted_chars"] >= len(R) - 1 and stats["escaped_chars"] == 0
    off = StripReasoningConfig(detect_copies=False)
    got = complete(f"<think>{R}</think>{visible_reply(PROMPT, 'verbatim')}", cfg=off).text
    assert got == visible_reply(PROMPT, "verbatim")  # the block goes, the copy stays


# rendering ---------------------------------------------------------------------------------------
def test_reasoning_content_is_rendered_for_accounts_without_the_action() -> None:
    gen = GenerationRequest(
        "chatcmpl-1", "m", "chat", SamplingParams(max_tokens=5), (ChatMessage("user", "hi"),)
    )
    body = completion_body(gen, Completion((Choice(0, "yo", "stop", "hmm"),), Usage(1, 1)), 1)
    assert body["choices"][0]["message"]["reasoning_content"] == "hmm"
    body = completion_body(gen, Completion((Choice(0, "yo", "stop"),), Usage(1, 1)), 1)
    assert "reasoning_content" not in body["choices"][0]["message"]
    r = ChunkRenderer(gen, 1, include_usage=False)
    frames = r.frames(Chunk(0, "", reasoning="hm")) + r.frames(Chunk(0, "a", reasoning="m"))
    deltas = [orjson.loads(f[6:-2])["choices"][0]["delta"] for f in frames]
    assert deltas == [
        {"role": "assistant", "content": "", "reasoning_content": "hm"},
        {"content": "a", "reasoning_content": "m"},
    ]
    completion_gen = replace(gen, kind="completion")
    assert ChunkRenderer(completion_gen, 1, include_usage=False).frames(Chunk(0, "", reasoning="x")) == []
