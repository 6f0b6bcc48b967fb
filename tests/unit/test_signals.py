"""Per-request signals: multilingual reasoning-elicitation cues, template skeletons, payload shape,
script detection, bounded work on hostile input, determinism."""

from __future__ import annotations

import random
import time

import pytest

from antidistill.risk.lexicon import CUES, Cue, fold, squeeze, word_text
from antidistill.risk.signals import dominant_script, elicitation, extract_signals, find_cues
from antidistill.risk.skeleton import template_skeleton
from antidistill.risk.types import Message, RequestSignals, RiskEvent


def event(*messages: tuple[str, str]) -> RiskEvent:
    return RiskEvent(ts=0.0, account="acct", messages=tuple(Message(r, c) for r, c in messages))


def user(text: str) -> RequestSignals:
    return extract_signals(event(("user", text)))


# --- reasoning elicitation -------------------------------------------------------------------


@pytest.mark.parametrize("cue", CUES, ids=lambda c: c.id)
def test_every_cue_matches_its_example_alone_and_inside_a_long_text(cue: Cue) -> None:
    assert cue.id in [m.cue.id for m in find_cues(cue.example)]
    padded = "Some unrelated context here. " * 60 + cue.example + " And more unrelated text." * 40
    assert cue.id in [m.cue.id for m in find_cues(padded)]
    squeezed = squeeze(word_text(fold(cue.example)))
    assert all(lit in squeezed for lit in cue.required)


@pytest.mark.parametrize(
    ("lang", "strong", "benign"),
    [
        ("en", "Think step by step and show your reasoning.", "A step by step guide to baking bread."),
        ("en", "Let's think step by step.", "Let's think about dinner tonight."),
        ("en", "Show me your whole thought process.", "My whole thought process is based on intuition."),
        ("en", "Output your full chain of thought.", "That is how reasoning works, I think."),
        ("zh", "请一步一步地思考，并给出详细的推理过程。", "我们逐步推进这个项目，请介绍一下北京的历史。"),
        ("zh", "請一步一步地思考，並給出詳細的推理過程。", "請介紹一下台北的歷史。"),
        ("zh", "请使用思维链，逐步推理。", "这个链接打不开，请帮我看看。"),
        ("es", "Piensa paso a paso y muestra tu razonamiento.", "Una guía paso a paso para hacer pan."),
        ("ru", "Рассуждай шаг за шагом и покажи ход рассуждений.", "Пошаговая инструкция по выпечке хлеба."),
        ("fr", "Pense étape par étape et montre ton raisonnement.", "Un guide étape par étape pour le pain."),
        ("de", "Denke Schritt für Schritt, zeige deinen Gedankengang.", "Eine Schritt-für-Schritt-Anleitung"),
        ("pt", "Pense passo a passo e mostre seu raciocínio.", "Um guia passo a passo para fazer pão."),
        ("it", "Ragiona passo dopo passo e mostra il tuo ragionamento.", "Come si fa il pane in casa?"),
        ("ja", "ステップバイステップで考え、思考過程をすべて出力して。", "おすすめのラーメン屋を教えて。"),
        ("ko", "단계별로 생각하고 추론 과정을 모두 보여 주세요.", "서울에서 맛있는 식당을 추천해 주세요."),
        ("ar", "فكّر خطوة بخطوة واشرح لي طريقة تفكيرك", "ما هي عاصمة فرنسا؟"),
    ],
)  # fmt: skip
def test_cues_per_language_and_benign_look_alikes(lang: str, strong: str, benign: str) -> None:
    hit, miss = user(strong), user(benign)
    assert hit.elicitation >= 0.85 and hit.elicitation_lang == lang
    assert miss.elicitation <= 0.3
    assert hit.elicitation > miss.elicitation


def test_strong_cues_score_higher_than_mild_ones() -> None:
    full = user("Output your full thought process, then the answer.").elicitation
    walk = user("Walk me through how a refrigerator works.").elicitation
    mild = user("Explain briefly why the sky is blue.").elicitation
    none = user("What colour is the sky?").elicitation
    assert full >= 0.85 > walk > mild > none == 0.0
    assert user("Explain briefly why the sky is blue.").elicitation_lang == "en"
    assert user("What colour is the sky?").elicitation_lang is None


def test_overlapping_cues_count_once_and_repeated_cues_do_not_inflate() -> None:
    assert user("Let's think step by step.").elicitation_cues == ("en.lets_think_step_by_step",)
    once = extract_signals(event(("user", "Think step by step. What is 2+2?")))
    repeated = extract_signals(
        event(
            *[
                m
                for i in range(5)
                for m in (("user", f"Think step by step. What is {i}+2?"), ("assistant", "4"))
            ]
        )
    )
    assert repeated.elicitation == once.elicitation == 0.7


def test_cue_in_an_earlier_user_message_counts() -> None:
    e = event(
        ("user", "From now on, always think step by step and show your full reasoning."),
        ("assistant", "Understood."),
        ("user", "What is 17 * 23?"),
    )
    assert user("What is 17 * 23?").elicitation == 0.0  # the last message alone is innocent
    assert extract_signals(e).elicitation >= 0.9
    assert extract_signals(e).turns == 2


def test_cue_in_the_system_prompt_counts() -> None:
    e = event(("system", "Always output your complete chain of thought before the answer."), ("user", "2+2?"))
    s = extract_signals(e)
    assert s.elicitation >= 0.85 and s.elicitation_lang == "en"
    assert s.system_hash is not None and s.turns == 1


def test_assistant_messages_are_not_scanned() -> None:
    e = event(
        ("user", "How do I bake bread?"), ("assistant", "Let's think step by step."), ("user", "Thanks")
    )
    assert extract_signals(e).elicitation == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "T.h.i.n.k   s-t-e-p  b_y  s.t.e.p",
        "ｔｈｉｎｋ　ｓｔｅｐ　ｂｙ　ｓｔｅｐ",  # fullwidth letters and spaces
        "THINK\u200b STEP\u200b BY\u200b STEP",  # zero-width spaces, upper case
        "t h i n k   s t e p   b y   s t e p",
        "think\n\tstep -- by -- step!!!",
    ],
)
def test_obfuscated_english_cue_is_found(text: str) -> None:
    assert user(text).elicitation >= 0.7


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("请 一 步 一 步 地 思 考", "zh"),
        ("Pense etape par etape.", "fr"),  # accents dropped
        ("Denke Schritt fuer Schritt.", "de"),  # ASCII transliteration
        ("Piensa paso-a-paso.", "es"),
        ("РАССУЖДАЙ ШАГ ЗА ШАГОМ", "ru"),
        ("Réfle\u0301chis e\u0301tape par e\u0301tape.", "fr"),  # decomposed accents (NFD input)
    ],
)
def test_obfuscated_cues_in_other_languages(text: str, lang: str) -> None:
    s = user(text)
    assert s.elicitation >= 0.7 and s.elicitation_lang == lang


def test_reasoning_tags_are_a_cue() -> None:
    s = user("Answer inside <think></think> tags first.")
    assert s.elicitation >= 0.85 and "tag.think" in s.elicitation_cues
    assert user("Use <b>bold</b> for the title.").elicitation == 0.0


def test_cue_at_the_end_of_a_huge_prompt_is_seen() -> None:
    s = user("lorem ipsum " * 100_000 + "Now think step by step.")
    assert s.elicitation >= 0.7


def test_scanning_is_bounded_to_head_and_tail_of_each_message() -> None:
    # documented bound: only the first 4 kB and the last 1 kB of a message are scanned for cues
    assert (
        user("lorem ipsum " * 50_000 + "Now think step by step. " + "lorem ipsum " * 50_000).elicitation
        == 0.0
    )


def test_elicitation_of_nothing() -> None:
    assert elicitation([]) == (0.0, None, ())


# --- template skeletons ----------------------------------------------------------------------

QUESTIONS = [
    "What is the boiling point of water at 3000 m altitude?",
    "Why did the Roman Empire fall?",
    "How does a transistor amplify a signal?",
    "If Alice has 12 apples and gives 5 to Bob, how many are left?",
    "Explain the difference between mitosis and meiosis in plants and animals, with examples of each.",
    "What is 17 * 23?",
    'What does the word "serendipity" mean?',
    "Who wrote War and Peace, and in which year was it published?",
    "A train travels 120 km in 1.5 hours. What is its average speed?",
    "Is zero an even number?",
]
TEMPLATES = [
    "Question: {q}\nLet's think step by step.",
    "You are an expert tutor. Answer the following question thoroughly, reasoning step by step:\n\n{q}",
    "Answer the question below in full detail, covering every relevant aspect: {q}",
    "Answer as a world-class expert.\n\n### Question\n{q}\n\n### Answer",
    "Provide a comprehensive answer with all intermediate reasoning.\nQuestion: {q}",
    "{q}\n\nRespond with a detailed explanation, then a short final answer on its own line.",
]


def payloads(n: int) -> list[str]:
    rng = random.Random(7)
    out = list(QUESTIONS)
    while len(out) < n:  # more questions: numbers, names, quotes and lengths vary
        a, b = rng.sample(QUESTIONS, 2)
        out.append(
            f"{a} Also, {b[0].lower()}{b[1:]}" if rng.random() < 0.5 else f"{a} ({rng.randint(1, 999)})"
        )
    return out[:n]


@pytest.mark.parametrize("template", TEMPLATES[:5])
def test_fifty_requests_from_one_template_share_one_skeleton(template: str) -> None:
    skeletons = {template_skeleton(template.format(q=q)).hash for q in payloads(50)}
    assert len(skeletons) == 1


def test_payload_first_templates_still_share_their_tail() -> None:
    # "{q}\n\nRespond with ...": the payload opens the message; the tail hash still repeats
    results = [template_skeleton(TEMPLATES[5].format(q=q)) for q in payloads(50)]
    assert len({r.tail for r in results}) == 1
    assert len({r.hash for r in results}) > 1


def test_mid_sentence_payload_shares_head_and_tail() -> None:
    topics = ["the sea", "autumn leaves", "a lonely robot", "my grandmother's kitchen", "the first snow"]
    poets = ["Emily Dickinson", "Pablo Neruda", "Basho", "Walt Whitman", "Sylvia Plath"]
    results = [
        template_skeleton(f"Write a poem about {t} in the style of {p}.") for t in topics for p in poets
    ]
    assert len({r.head for r in results}) == 1 and len({r.tail for r in results}) == 1


def test_long_payload_templates_share_one_skeleton() -> None:
    rng = random.Random(3)
    words = ["the", "of", "market", "inflation", "policy", "river", "ancient", "model", "data", "city"]
    articles = [" ".join(rng.choice(words) for _ in range(rng.randint(40, 400))) + "." for _ in range(30)]
    a = {
        template_skeleton(f"Summarize the following article in 3 bullet points:\n\n{x}").hash
        for x in articles
    }
    b = {
        template_skeleton(f"{x}\n\nSummarize the article above in {rng.randint(2, 9)} bullet points.").hash
        for x in articles
    }
    c = {template_skeleton(f"Translate into German. Keep names unchanged.\nText: {x}").hash for x in articles}
    assert len(a) == len(b) == len(c) == 1


def test_cjk_template_shares_one_skeleton() -> None:
    questions = [
        "水的沸点是多少？", "为什么天空是蓝色的？", "一个物体以每秒20米的速度被竖直向上抛出，求最大高度。",
        "请解释光合作用的过程。", "《红楼梦》的作者是谁？", "北京到上海有多远？",
    ] * 5  # fmt: skip
    qs = [f"{q}（第{i}题）" for i, q in enumerate(questions)]
    skeletons = {template_skeleton(f"请回答下面的问题，并给出详细的推理过程：\n{q}").hash for q in qs}
    assert len(skeletons) == 1


NATURAL = [
    "How do I reverse a linked list in Python without extra memory?",
    "What's a good recipe for banana bread that doesn't use eggs?",
    "Can you explain how vaccines train the immune system?",
    "Write a haiku about the ocean at night.",
    "My laptop fan is very loud when I play games, is that normal?",
    "Help me write a polite email declining a job offer.",
    "Why is the sky blue?",
    "What are the pros and cons of remote work?",
    "Suggest a name for a small bakery that sells sourdough.",
    "How many hours of sleep does a teenager need?",
    "Translate 'good morning' into Japanese.",
    "I keep procrastinating. Any tips to stay focused?",
    "Summarize the plot of Hamlet in three sentences.",
    "What's the difference between a virus and a bacterium?",
    "Give me a 3-day workout plan for beginners.",
    "Is it safe to eat raw cookie dough?",
    "How do I center a div in CSS?",
    "Recommend some sci-fi books similar to Dune.",
    "What should I pack for a week-long hiking trip?",
    "Explain recursion to a five year old.",
]


def test_distinct_natural_prompts_get_distinct_skeletons() -> None:
    assert len({template_skeleton(p).hash for p in NATURAL}) == len(NATURAL)
    zh = [
        "今天天气怎么样？", "如何学习编程？", "推荐几本好看的小说。", "怎么做红烧肉？", "感冒了吃什么药？",
        "帮我写一封请假邮件。", "为什么猫喜欢晒太阳？", "学习英语有什么好方法？",
    ]  # fmt: skip
    assert len({template_skeleton(p).hash for p in zh}) == len(zh)


def test_long_single_paragraph_prompts_stay_distinct() -> None:
    filler = (
        "and I would like to know what you think about it, because I have been wondering for a while now."
    )
    openings = [
        "Yeah. I went hiking last weekend",
        "Hi! My cat keeps scratching the sofa",
        "Ok so my boss asked me to plan the offsite",
        "Hello. I am learning to play the cello",
        "Yes! We finally bought a house near the lake",
        "Hmm. My sourdough starter smells like acetone",
    ]
    prompts = [f"{o} {filler} {filler}" for o in openings]
    assert all(len(p.split()) > 40 for p in prompts)
    assert len({template_skeleton(p).hash for p in prompts}) == len(prompts)


def test_chit_chat_does_not_collapse() -> None:
    chat = [
        "hi",
        "hello",
        "thanks!",
        "ok",
        "good morning",
        "how are you?",
        "lol",
        "bye",
        "thank you so much",
        "what's up?",
    ]
    assert len({template_skeleton(p).hash for p in chat}) >= len(chat) - 1


def test_skeleton_masks_payload_pieces() -> None:
    text = template_skeleton(
        "Email bob@example.com the report from https://example.com/x?id=3 by Friday, cost 1,250.50 USD, "
        'and ask Mary Jane about "the thing" and `foo()`.'
    ).text
    for raw in ("bob@", "https", "1,250", "mary", "the thing", "foo()"):
        assert raw not in text
    for placeholder in ("<email>", "<url>", "<n>", "<e>", "<q>", "<code>"):
        assert placeholder in text


# --- payload shape, code, structure, script, system prompt ----------------------------------


def test_payload_shape_fields() -> None:
    s = extract_signals(
        event(("system", "Be terse."), ("user", "hi"), ("assistant", "hey"), ("user", "a\nb\nc\n"))
    )
    assert (s.payload_chars, s.payload_lines, s.turns) == (6, 3, 2)
    assert user("").payload_lines == 0 and user("one line").payload_lines == 1


def test_system_hash() -> None:
    a = extract_signals(event(("system", "You are a pirate."), ("user", "hi")))
    b = extract_signals(event(("system", "You are a pirate."), ("user", "something else")))
    c = extract_signals(event(("system", "You are a poet."), ("user", "hi")))
    assert a.system_hash == b.system_hash != c.system_hash
    assert user("hi").system_hash is None
    assert extract_signals(event(("system", "   "), ("user", "hi"))).system_hash is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Why does this fail?\n```python\nprint(x[0])\n```", True),
        ("def add(a, b):\n    return a + b", True),
        ("#include <stdio.h>\nint main() { return 0; }", True),
        ("function f(x) {\n  let y = x + 1;\n  return y;\n}", True),
        ("const total = items.reduce((a, b) => a + b, 0);", True),
        ("Can you tell me a story about a dragon and a knight?", False),
        ('{"name": "Ada", "age": 36}', False),
    ],
)
def test_has_code(text: str, code: bool) -> None:
    assert user(text).has_code is code


@pytest.mark.parametrize(
    ("text", "structured"),
    [
        ("Steps:\n1. Preheat the oven\n2. Mix flour\n3. Bake", True),
        ("Groceries:\n- milk\n- eggs\n- bread", True),
        ('{"name": "Ada", "languages": ["en", "fr"]}', True),
        ("| name | age |\n|------|-----|\n| Ada | 36 |", True),
        ("I like milk, eggs and bread. What can I cook?", False),
        ("1 cup of flour is how many grams?", False),
    ],
)
def test_has_structure(text: str, structured: bool) -> None:
    assert user(text).has_structure is structured


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("How do I bake bread?", "latin"),
        ("Où est la bibliothèque, s'il vous plaît ?", "latin"),
        ("Wie spät ist es? Ich möchte Brötchen kaufen.", "latin"),
        ("今天天气怎么样？", "cjk"),
        ("東京でおすすめのラーメン屋を教えて。", "cjk"),
        ("서울에서 맛있는 식당을 추천해 주세요.", "cjk"),
        ("Как испечь хлеб дома?", "cyrillic"),
        ("ما هي عاصمة فرنسا؟", "arabic"),
        ("नमस्ते, आप कैसे हैं?", "other"),
        ("12345 + 678 = ?", "other"),
        ("🙂🙂🙂", "other"),
        ("", "other"),
        ("Translate into English: 今天天气很好，我们一起去公园散步吧，然后去吃饭。", "cjk"),
    ],
)
def test_script(text: str, script: str) -> None:
    assert user(text).script == script
    assert dominant_script(text) == script


# --- robustness and determinism --------------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [
        (),
        (("user", ""),),
        (("assistant", "only an assistant turn"),),
        (("system", ""), ("user", "   \n\n  ")),
        (("user", "\ud800 lone surrogate \udfff"),),
        (("user", "\x00\x01\x02 control characters \x7f"),),
        (("tool", "a tool result"), ("user", "hi")),
    ],
)
def test_odd_events_never_raise(messages: tuple[tuple[str, str], ...]) -> None:
    s = extract_signals(event(*messages))
    assert 0.0 <= s.elicitation <= 1.0 and len(s.skeleton) == 16
    assert s.script in {"latin", "cjk", "cyrillic", "arabic", "other"}


def test_random_unicode_never_raises() -> None:
    rng = random.Random(11)
    for _ in range(300):
        text = "".join(
            chr(rng.choice([rng.randint(0, 0x2FFF), rng.randint(0x3000, 0xFFFF)])) for _ in range(80)
        )
        s = user(text)
        assert 0.0 <= s.elicitation <= 1.0


@pytest.mark.parametrize(
    "huge",
    [
        "a" * 1_000_000,
        "word " * 200_000,
        "'" * 1_000_000,
        '"(' * 500_000,
        "<" * 1_000_000,
        "Step 1: " * 125_000,
        "1, " * 333_333,
        "A B " * 250_000,
        "思考" * 500_000,
        "\n" * 1_000_000,
        "```" * 333_333,
        "| a |" * 200_000,
    ],
    ids=lambda h: repr(h[:6]),
)
def test_one_megabyte_prompt_is_bounded(huge: str) -> None:
    e = event(("system", huge), ("user", huge), ("assistant", huge), ("user", huge))
    started = time.perf_counter()
    s = extract_signals(e)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.25, elapsed  # ~1-3 ms in practice; generous for loaded CI machines
    assert s.payload_chars == len(huge)


def test_deterministic_and_stateless() -> None:
    events = [event(("user", p)) for p in NATURAL + QUESTIONS] + [
        event(("system", "Think step by step."), ("user", "请一步一步地思考")),
    ]
    first = [extract_signals(e) for e in events]
    second = [extract_signals(e) for e in reversed(events)][::-1]
    assert first == second
    # pinned: a change of the masking or hashing makes skeletons stored earlier incomparable
    pinned = template_skeleton("Question: What is 2+2?\nLet's think step by step.")
    assert pinned.text == "question: <v> / let's think step by step."
    assert pinned.hash == "b70e0a1ad1a89609" and template_skeleton("hi").hash == "106bce4401410416"
