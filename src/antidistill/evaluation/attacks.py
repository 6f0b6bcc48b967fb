"""Attacker families for the labelled traffic generator.

Payloads come from the same corpus half as the benign traffic (``w.pools``); what differs is the
wrapping (templates, reasoning cues), the volume, the timing and the infrastructure. Families:
``bulk``, ``sweep``, ``reasoning``, ``paraphrase``, ``low_and_slow``, ``hydra``, ``mimicry``,
``adaptive`` and ``mixed_share`` (benign traffic with a share ``s`` of attack requests; every event
of such an account carries ``share=s``, its attack requests ``label="attack"``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from antidistill.evaluation.personas import (
    BROWSER_UAS,
    CONSUMER_HOURS,
    DAY,
    SDK_UAS,
    Identity,
    benign_request,
    host_ip,
    pick,
    random_prefix,
    random_tz,
    session_starts,
    think_gaps,
    tokens,
)
from antidistill.risk.types import Message

if TYPE_CHECKING:
    from antidistill.evaluation.traffic import World

# fmt: off
ATTACK_FAMILIES = (
    "bulk", "sweep", "reasoning", "paraphrase", "low_and_slow", "hydra", "mimicry", "adaptive", "mixed_share",
)

# reasoning-elicitation cues: language code -> (chatterbot language, wordings)
REASONING_CUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "en": ("english", (
        "Think step by step and show all your reasoning.",
        "Let's work this out step by step, writing out every intermediate step.",
        "Before answering, reason through the problem in detail and show your full chain of thought.",
        "Explain your reasoning process step by step before giving the final answer.",
        "Show your complete thought process first, then the answer.",
    )),
    "zh": ("chinese", ("请一步一步地思考并写出完整的推理过程。", "请详细展示你的思考过程，然后给出答案。",
                       "请逐步推理，写出每一步。")),
    "es": ("spanish", ("Piensa paso a paso y muestra todo tu razonamiento.",
                       "Explica tu razonamiento paso a paso antes de responder.")),
    "ru": ("russian", ("Рассуждай шаг за шагом и покажи весь ход рассуждений.",
                       "Подумай шаг за шагом и распиши каждый шаг, прежде чем ответить.")),
    "fr": ("french", ("Réfléchis étape par étape et montre tout ton raisonnement.",)),
    "de": ("german", ("Denke Schritt für Schritt nach und zeige deinen gesamten Denkweg.",)),
    "ja": ("japanese", ("ステップバイステップで考え、推論の過程をすべて示してください。",)),
    "ko": ("korean", ("단계별로 생각하고 모든 추론 과정을 보여 주세요.",)),
    "pt": ("portuguese", ("Pense passo a passo e mostre todo o seu raciocínio.",)),
    "it": ("italian", ("Ragiona passo dopo passo e mostra tutto il ragionamento.",)),
    "uk": ("ukrainian", ("Міркуй крок за кроком і покажи весь хід міркувань.",)),
    "tr": ("turkish", ("Adım adım düşün ve tüm akıl yürütmeni göster.",)),
    "id": ("indonesian", ("Pikirkan langkah demi langkah dan tunjukkan seluruh penalaranmu.",)),
    "hi": ("hindi", ("चरण दर चरण सोचें और अपना पूरा तर्क दिखाएँ।",)),
}
CUE_LANGS = tuple(REASONING_CUES)
CUE_WEIGHTS = np.array([30, 20, 10, 10, 4, 4, 4, 4, 4, 3, 3, 2, 1, 1], dtype=float) / 100
CUE_POSITIONS = ("{cue}\n\n{q}", "{q}\n\n{cue}", "{q} ({cue})",
                 "Question: {q}\nInstructions: {cue}\nAnswer:", "system")

HYDRA_TEMPLATES = (
    "You are an expert tutor. Answer the following question thoroughly, reasoning step by step:\n\n{q}",
    "Provide a comprehensive, well-structured answer with all intermediate reasoning.\nQuestion: {q}",
    "Answer as a world-class expert. First think the problem through, then answer.\n\n"
    "### Question\n{q}\n\n### Answer",
    "{q}\n\nRespond with a detailed explanation, then a short final answer on its own line.",
    "Solve the following task and explain your solution in depth:\n{q}",
    "Answer the question below in full detail, covering every relevant aspect: {q}",
)
SWEEP_TEMPLATES = (
    "Explain the following to a {level} learner: {topic}",
    "Write a {level}-level exam question based on this and give a complete model answer: {topic}",
    "Give a {level} worked example that illustrates: {topic}",
    "As a {level} practitioner, list the key points of: {topic}",
    "Create a {level} quiz (5 questions with answers) about: {topic}",
    "Solve this at {level} depth and justify every step: {topic}",
)
SWEEP_LEVELS = ("elementary", "high-school", "undergraduate", "graduate", "expert")
_PARA = (  # slots of the paraphrased template; each request draws one wording per slot
    ("Please", "Kindly", "Could you", "I need you to", "Can you", "Go ahead and", "", "Now"),
    ("provide", "give", "write", "produce", "draft", "compose"),
    ("a detailed", "a thorough", "an in-depth", "a complete", "a comprehensive", "an exhaustive",
     "a careful"),
    ("answer", "response", "explanation", "solution", "write-up"),
    ("to the following question", "for this question", "to this", "for the question below",
     "regarding this"),
    (":", ":\n", " -", "\n\n", ". Question:", " ->"),
    ("", " Include your reasoning.", " Explain every step.", " Be precise.", " Show your work.",
     " Cite facts."),
)
# fmt: on


def reasoning_messages(w: World) -> tuple[Message, ...]:
    """A corpus prompt (in the cue's language when that half has one) with a reasoning cue in one of
    several positions and wordings."""
    code = CUE_LANGS[int(w.rng.choice(len(CUE_LANGS), p=CUE_WEIGHTS))]
    lang, wordings = REASONING_CUES[code]
    pool = w.pools.qa_by_lang.get(lang)
    own_language = bool(pool) and (code != "en" or w.rng.random() < 0.3)
    q = pick(w, pool).question if pool and own_language else w.pools.mixed(w, 1)[0]
    cue, pos = pick(w, wordings), pick(w, CUE_POSITIONS)
    if pos == "system":
        return Message("system", cue), Message("user", q)
    return (Message("user", pos.format(cue=cue, q=q)),)


def paraphrased(w: World, q: str) -> str:
    words = [pick(w, slot) for slot in _PARA]
    lead = " ".join(x for x in words[:5] if x)
    lead = lead[0].upper() + lead[1:]
    ask = f"{lead}{words[5]}"
    return f"{ask} {q}{words[6]}" if w.rng.random() < 0.7 else f"{q}\n\n{lead}.{words[6]}"


def regular_times(w: World, n: int, t0: float, t1: float, jitter: float = 0.15) -> list[float]:
    """``n`` times evenly spaced over [t0, t1) around the clock, each moved by up to ``jitter`` steps."""
    step = (t1 - t0) / max(n, 1)
    return (t0 + (np.arange(n) + 0.5 + w.rng.uniform(-jitter, jitter, size=n)) * step).tolist()


def datacenter_identity(w: World, ua: str | None = None) -> Identity:
    prefix = random_prefix(w)
    ips = tuple(host_ip(w, prefix) for _ in range(int(w.rng.integers(1, 4))))
    return Identity(w.new_account(), ips, ua or pick(w, SDK_UAS), w.new_payment(), random_tz(w))


def _emit_attack(
    w: World,
    ident: Identity,
    t: float,
    msgs: tuple[Message, ...],
    family: str,
    median: float,
    *,
    ip: str | None = None,
    ua: str | None = None,
    campaign: str | None = None,
) -> None:
    if ip is None and len(ident.ips) > 1:
        ip = pick(w, ident.ips)
    w.emit(
        ident,
        t,
        msgs,
        family,
        label="attack",
        ip=ip,
        ua=ua,
        completion_tokens=tokens(w, median),
        campaign=campaign,
    )


def bulk(w: World, n: int) -> None:
    """High volume, diverse single-turn prompts, around the clock at a steady rate."""
    ident = datacenter_identity(w)
    t0 = w.start + float(w.rng.uniform(0, 0.2)) * (w.end - w.start)
    sys = w.rng.random() < 0.5
    for t, q in zip(regular_times(w, n, t0, w.end), w.pools.mixed(w, n), strict=True):
        msgs = (
            (Message("system", "You are a helpful assistant."), Message("user", q))
            if sys
            else (Message("user", q),)
        )
        _emit_attack(w, ident, t, msgs, "bulk", 350)


def sweep(w: World, n: int) -> None:
    """Capability sweep: topic-major enumeration of templates x difficulty levels over corpus topics."""
    ident = datacenter_identity(w)
    per_topic = len(SWEEP_TEMPLATES) * len(SWEEP_LEVELS)
    topics = w.pools.mixed(w, math.ceil(n / per_topic), weights=(0.1, 0.4, 0.3, 0.2))
    prompts = [
        tpl.format(level=lv, topic=tp) for tp in topics for tpl in SWEEP_TEMPLATES for lv in SWEEP_LEVELS
    ]
    t0 = w.start + float(w.rng.uniform(0, 0.3)) * (w.end - w.start)
    for t, p in zip(regular_times(w, n, t0, w.end, 0.05), prompts[:n], strict=True):
        _emit_attack(w, ident, t, (Message("user", p),), "sweep", 500)


def reasoning(w: World, n: int) -> None:
    ident = datacenter_identity(w)
    for t in regular_times(w, n, w.start, w.end, 0.4):
        _emit_attack(w, ident, t, reasoning_messages(w), "reasoning", 900)


def paraphrase(w: World, n: int) -> None:
    ident = datacenter_identity(w)
    t0 = w.start + float(w.rng.uniform(0, 0.3)) * (w.end - w.start)
    for t, q in zip(regular_times(w, n, t0, w.end), w.pools.mixed(w, n), strict=True):
        _emit_attack(w, ident, t, (Message("user", paraphrased(w, q)),), "paraphrase", 600)


def low_and_slow(w: World, max_per_day: int) -> None:
    """<= ``max_per_day`` requests in every UTC day, every day, at the local hours of a human user."""
    prefix = random_prefix(w)
    ident = Identity(
        w.new_account(), (host_ip(w, prefix),), pick(w, BROWSER_UAS), w.new_payment(), random_tz(w)
    )
    first_day = math.floor(w.start / DAY) * DAY
    for day in range(math.ceil((w.end - first_day) / DAY)):
        if w.rng.random() < 0.1:
            continue  # a day off
        k = int(w.rng.integers(max_per_day // 2, max_per_day + 1))
        hours = np.minimum(
            (w.rng.choice(24, size=k, p=CONSUMER_HOURS) + w.rng.random(k) - ident.tz) % 24.0, 23.9999
        )
        for t in (first_day + day * DAY + np.sort(hours) * 3600.0).tolist():
            if w.start <= t < w.end:
                msgs = (
                    reasoning_messages(w)
                    if w.rng.random() < 0.6
                    else (Message("user", w.pools.mixed(w, 1)[0]),)
                )
                _emit_attack(w, ident, t, msgs, "low_and_slow", 700)


def hydra(w: World, n_accounts: int, per_account: int, campaign: str) -> None:
    """Many accounts behind the shared proxy pool: created in key-creation bursts, firing in
    synchronized waves with shared templates, rotating user agents, some sharing payment cards."""
    rng, span = w.rng, w.end - w.start
    bursts = np.sort(w.start + rng.uniform(0, 0.5, size=max(2, math.ceil(n_accounts / 80))) * span)
    waves = np.arange(w.start + float(rng.uniform(0, 3600)), w.end, float(rng.uniform(1800, 7200)))
    templates = [HYDRA_TEMPLATES[i] for i in rng.choice(len(HYDRA_TEMPLATES), size=4, replace=False).tolist()]
    cards = [w.new_payment() for _ in range(max(1, n_accounts // 30))]
    uas = (*BROWSER_UAS, *SDK_UAS)
    for _ in range(n_accounts):
        first = float(bursts[int(rng.random() * len(bursts))] + rng.uniform(0, 900))
        card = pick(w, cards) if rng.random() < 0.3 else w.new_payment()
        ident = Identity(w.new_account(), (), pick(w, uas), card, random_tz(w))
        mine = templates[: 1 + int(rng.random() * 2)] if rng.random() < 0.5 else templates[2:]
        later = waves[waves > first + 60]
        k = min(len(later), max(0, int(rng.integers(per_account * 2 // 3, per_account * 4 // 3 + 1)) - 1))
        times = [
            first,
            *(np.sort(rng.choice(later, size=k, replace=False)) + rng.normal(0, 20, size=k)).tolist(),
        ]
        for t, q in zip(times, w.pools.mixed(w, len(times)), strict=True):
            msgs = (Message("user", pick(w, mine).format(q=q)),)
            ip = host_ip(w, pick(w, w.proxy_pool))
            _emit_attack(w, ident, t, msgs, "hydra", 700, ip=ip, ua=pick(w, uas), campaign=campaign)


def mimicry(w: World, n: int) -> None:
    """Prompts drawn like benign users', but harvester volume and single-turn only; half the requests in
    evening sessions like a person, half around the clock."""
    prefix = random_prefix(w)
    ident = Identity(
        w.new_account(), (host_ip(w, prefix),), pick(w, BROWSER_UAS), w.new_payment(), random_tz(w)
    )
    sessions = session_starts(w, n / 2 / w.cfg.days / 6.0, ident.tz, CONSUMER_HOURS, 1.0).tolist()
    times = regular_times(w, n - n // 2, w.start, w.end, 0.5)
    for s in sessions:
        t = s
        for gap in think_gaps(w, 6, 20.0):
            times.append(t)
            t += gap
    for t in times[:n]:
        msgs, ctoks, _ = benign_request(w)
        w.emit(ident, t, msgs, "mimicry", label="attack", completion_tokens=ctoks)


def adaptive(w: World, n: int, campaign: str) -> None:
    """Rotates to a fresh account after 50-300 requests, as if throttled; proxy pool and hydra templates."""
    lo, hi = w.cfg.adaptive_rotate
    templates = HYDRA_TEMPLATES[:3]
    span = w.end - w.start
    t, left, step = w.start + float(w.rng.uniform(0, 0.05)) * span, n, 0.8 * span / n
    while left > 0 and t < w.end:
        m = min(left, int(w.rng.integers(lo, hi + 1)))
        ident = Identity(w.new_account(), (), pick(w, SDK_UAS), w.new_payment(), random_tz(w))
        for q in w.pools.mixed(w, m):
            msgs = (Message("user", pick(w, templates).format(q=q)),)
            _emit_attack(
                w, ident, t, msgs, "adaptive", 700, ip=host_ip(w, pick(w, w.proxy_pool)), campaign=campaign
            )
            t += step * float(w.rng.uniform(0.5, 1.5))
        left -= m
        t += float(w.rng.uniform(600, 7200))  # throttled: a pause, then a new key


def mixed_share(w: World, share: float, n: int) -> None:
    """An ordinary developer-like account; each request is an attack request with probability ``share``."""
    ident = Identity(
        w.new_account(), (host_ip(w, random_prefix(w)),), pick(w, SDK_UAS), w.new_payment(), random_tz(w)
    )
    per_day = n / (w.cfg.days * 4.0 * 0.89)  # sessions average 4 requests; weekends at 0.6
    for s in session_starts(w, per_day, ident.tz, CONSUMER_HOURS, 0.6).tolist():
        t = s
        for gap in think_gaps(w, 1 + int(w.rng.geometric(1 / 3)), 45.0):
            if w.rng.random() < share:
                tpl = pick(w, HYDRA_TEMPLATES)
                attack = (
                    reasoning_messages(w)
                    if w.rng.random() < 0.5
                    else (Message("user", tpl.format(q=w.pools.mixed(w, 1)[0])),)
                )
                w.emit(
                    ident,
                    t,
                    attack,
                    "mixed_share",
                    label="attack",
                    completion_tokens=tokens(w, 800),
                    share=share,
                )
            else:
                msgs, ctoks, reply = benign_request(w)
                w.emit(ident, t, msgs, "mixed_share", response=reply, completion_tokens=ctoks, share=share)
            t += gap


def simulate_attacks(w: World) -> None:
    cfg, s = w.cfg, w.cfg.scaled
    for _ in range(s(cfg.n_bulk)):
        bulk(w, cfg.bulk_requests)
    for _ in range(s(cfg.n_sweep)):
        sweep(w, cfg.sweep_requests)
    for _ in range(s(cfg.n_reasoning)):
        reasoning(w, cfg.reasoning_requests)
    for _ in range(s(cfg.n_paraphrase)):
        paraphrase(w, cfg.paraphrase_requests)
    for _ in range(s(cfg.n_low_and_slow)):
        low_and_slow(w, cfg.low_and_slow_max_per_day)
    for i in range(cfg.n_hydra):
        hydra(w, cfg.hydra_size, cfg.hydra_requests, f"hydra-{i}")
    for _ in range(s(cfg.n_mimicry)):
        mimicry(w, cfg.mimicry_requests)
    for i in range(s(cfg.n_adaptive)):
        adaptive(w, cfg.adaptive_requests, f"adaptive-{i}")
    for share in cfg.mixed_shares:
        for _ in range(s(cfg.mixed_accounts_per_share)):
            mixed_share(w, share, cfg.mixed_requests)
