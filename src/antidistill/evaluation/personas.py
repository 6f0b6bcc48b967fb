"""Benign accounts for the labelled traffic generator, and the time/identity helpers attackers share.

Ordinary users (``chat``, ``multilingual_qa``, ``developer``) come in sessions at the hours of their
own timezone, busier on weekdays, with human pauses between requests. The hard negatives look like
harvesting and are not: ``benchmark_run`` (a harness running the whole of MT-bench or HumanEval back to
back, sometimes with "Let's think step by step."), ``batch_job`` (one system prompt, one template,
hundreds of payloads at a fixed cadence) and ``enterprise`` (many accounts behind one corporate /24 NAT,
one SDK user agent, one company card). Some ordinary users reach us through the same residential proxy
ranges the hydra campaigns use (VPN users), and some ask for step-by-step explanations.

Every function draws from ``w.rng`` in a fixed order, so a seed fixes the trace.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from antidistill.errors import ConfigError
from antidistill.evaluation.corpora import MTBenchQuestion, QAPair, Split, load_corpora
from antidistill.risk.types import Message

if TYPE_CHECKING:
    from antidistill.evaluation.traffic import World

T = TypeVar("T")
DAY = 86400.0
BENIGN_PERSONAS = ("chat", "multilingual_qa", "developer", "benchmark_run", "batch_job", "enterprise")

# fmt: off
BROWSER_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile",
)
SDK_UAS = (
    "OpenAI/Python 1.54.3", "OpenAI/Python 1.51.0", "OpenAI/Python 1.40.6", "AsyncOpenAI/Python 1.54.3",
    "OpenAI/NodeJS 4.67.1", "python-requests/2.32.3", "langchain-openai/0.2.9", "curl/8.5.0",
)
HARNESS_UAS = ("OpenAI/Python 1.54.3", "python-requests/2.32.3", "lm-eval/0.4.5", "FastChat/0.2.36")

# local hour-of-day weights: people (evenings) and offices (9-17)
_CONSUMER = [2, 1, 0.6, 0.4, 0.3, 0.4, 0.8, 1.5, 2.2, 2.6, 2.8, 3,
             3.2, 3, 2.8, 2.8, 3, 3.2, 3.6, 4.2, 4.6, 4.4, 3.6, 2.8]
_BUSINESS = [0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1.5, 4, 6, 6.5, 6,
             4.5, 5.5, 6, 6, 5.5, 4, 2, 1.2, 0.9, 0.7, 0.5, 0.3]
CONSUMER_HOURS = np.array(_CONSUMER) / sum(_CONSUMER)
BUSINESS_HOURS = np.array(_BUSINESS) / sum(_BUSINESS)
TIMEZONES = (-8.0, -6.0, -5.0, -3.0, 0.0, 1.0, 2.0, 3.0, 5.5, 7.0, 8.0, 9.0)
TZ_WEIGHTS = np.array([10, 5, 12, 5, 8, 14, 5, 5, 8, 4, 12, 6]) / 94
LANG_TZ = {  # other languages: a random timezone
    "chinese": 8.0, "traditionalchinese": 8.0, "japanese": 9.0, "korean": 9.0, "russian": 3.0,
    "ukrainian": 2.0, "persian": 3.5, "turkish": 3.0, "hebrew": 2.0, "indonesian": 7.0, "thai": 7.0,
    "portuguese": -3.0, "spanish": -5.0, "hindi": 5.5, "marathi": 5.5, "bengali": 6.0, "tamil": 5.5,
    "telugu": 5.5, "oriya": 5.5, "hinglish": 5.5, "urdu": 5.0, "yoruba": 1.0,
}

BENIGN_CUES = (
    "Can you explain it step by step?", "Please walk me through it step by step.", "explain step by step pls",
    "Could you break this down step by step?", "¿Me lo puedes explicar paso a paso?",
    "能一步一步解释一下吗？", "Объясни по шагам, пожалуйста.",
)
BENCH_COT = "Let's think step by step."
BENCH_SYSTEMS = (None, "You are a helpful assistant.", "You are a helpful, respectful and honest assistant.")
DEV_ASKS = (
    "Complete the following Python function:\n\n{code}",
    "Write pytest unit tests for this function:\n\n{code}",
    "What's an efficient way to implement this? Keep it short.\n\n{code}",
    "Implement this and explain briefly:\n```python\n{code}\n```",
    "My implementation of this fails some hidden tests. Which edge cases am I missing?\n{code}",
)
DEV_SYSTEMS = (None, None, "You are a senior Python engineer. Answer with code first.")
BATCH_JOBS = (  # (fixed system prompt, fixed template)
    ("You are a customer-support analytics assistant. Be concise.",
     "Summarize the following customer review: {text}"),
    ("You label messages for a moderation queue.",
     "Classify the sentiment of this message as positive, negative or neutral. Reply with one word.\n\n"
     "Message: {text}"),
    ("You are a data extraction service. Output JSON only.",
     "Extract the people, places and products mentioned in the text below as JSON.\n\n{text}"),
    ("You are a translation engine. Output only the translation.", "Translate into German: {text}"),
    ("You triage support tickets.", "Assign one of [billing, bug, feature, other] to this ticket: {text}"),
)
OFFICE_ASKS = ("Summarize this email for me: {text}", "Rewrite this more politely: {text}", "{text}")
# fmt: on


@dataclass(frozen=True, slots=True)
class Identity:
    account: str
    ips: tuple[str, ...]  # the first is the usual one
    user_agent: str
    payment: str | None
    tz: float  # hours east of UTC


@dataclass(frozen=True)
class PromptPools:
    """Flat views of one corpus half, for fast uniform draws."""

    conversations: tuple[tuple[str, ...], ...]
    utterances: tuple[str, ...]  # user-side chat turns of >= 20 chars
    payloads: tuple[str, ...]  # user-side chat turns of >= 80 chars (batch payloads, "emails")
    qa_by_lang: dict[str, tuple[QAPair, ...]]
    langs: tuple[str, ...]
    lang_weights: np.ndarray  # benign users: half English, the rest by corpus size
    questions: tuple[str, ...]
    mtbench: tuple[MTBenchQuestion, ...]
    mtbench_first: tuple[str, ...]
    code: tuple[str, ...]  # HumanEval prompts

    def mixed(self, w: World, n: int, weights: Sequence[float] = (0.35, 0.35, 0.1, 0.2)) -> list[str]:
        """``n`` diverse single-turn prompts: chat turns, Q/A questions, MT-bench, HumanEval."""
        srcs = (self.utterances, self.questions, self.mtbench_first, self.code)
        which = w.rng.choice(4, size=n, p=np.asarray(weights) / sum(weights))
        u = w.rng.random(n)
        return [srcs[s][int(x * len(srcs[s]))] for s, x in zip(which.tolist(), u.tolist(), strict=True)]


@cache
def prompt_pools(split: Split) -> PromptPools:
    c = load_corpora(split)
    by_lang = c.qa_by_language()
    langs = tuple(by_lang)
    if not (c.conversations and c.mtbench and c.humaneval and "english" in by_lang):
        raise ConfigError(
            f"corpus half {split!r} is missing a source (chat, MT-bench, HumanEval or English Q/A)"
        )
    sizes = np.array([math.sqrt(len(by_lang[k])) for k in langs])
    weights = 0.5 * sizes / sizes.sum() + 0.5 * np.array([k == "english" for k in langs], dtype=float)
    return PromptPools(
        conversations=c.conversations,
        utterances=c.utterances(20),
        payloads=c.utterances(80),
        qa_by_lang=by_lang,
        langs=langs,
        lang_weights=weights / weights.sum(),
        questions=tuple(p.question for p in c.qa),
        mtbench=c.mtbench,
        mtbench_first=tuple(q.turns[0] for q in c.mtbench),
        code=tuple(t.prompt for t in c.humaneval),
    )


# ---------------------------------------------------------------- helpers shared with attacks.py


def pick(w: World, seq: Sequence[T]) -> T:
    return seq[int(w.rng.random() * len(seq))]


def tokens(w: World, median: float, sigma: float = 0.6) -> int:
    return max(1, int(w.rng.lognormal(math.log(median), sigma)))


def host_ip(w: World, prefix: str) -> str:
    return f"{prefix}.{2 + int(w.rng.random() * 252)}"


def random_prefix(w: World) -> str:
    """A random public-looking /24 (first octet 1-223, skipping the private/loopback blocks)."""
    a, b, c = w.rng.integers(1, 255, size=3).tolist()
    a = 1 + a % 223
    return f"{a if a not in (10, 127, 172, 192) else a + 1}.{b}.{c}"


def random_tz(w: World) -> float:
    return TIMEZONES[int(w.rng.choice(len(TIMEZONES), p=TZ_WEIGHTS))]


def session_starts(w: World, per_day: float, tz: float, hours: np.ndarray, weekend: float) -> np.ndarray:
    """Session start times: Poisson sessions per local day (``weekend`` x on Sat/Sun), hours drawn from
    the local ``hours`` profile, kept inside the trace window (leaving an hour for the session)."""
    days = np.arange(-1, w.cfg.days + 1)
    lam = per_day * np.where((w.weekday0 + days) % 7 >= 5, weekend, 1.0)
    counts = w.rng.poisson(lam)
    total = int(counts.sum())
    hour = w.rng.choice(24, size=total, p=hours) + w.rng.random(total)
    ts = w.start + np.repeat(days, counts) * DAY + (hour - tz) * 3600.0
    return np.sort(ts[(ts >= w.start) & (ts < w.end - 3600.0)])


def at_least_one(w: World, starts: np.ndarray) -> list[float]:
    """Every simulated account is active at least once (a quiet user still shows up)."""
    if len(starts):
        return starts.tolist()
    return [w.start + float(w.rng.random()) * (w.end - w.start - 3600.0)]


def think_gaps(w: World, n: int, median: float = 40.0) -> list[float]:
    return w.rng.lognormal(math.log(median), 0.9, size=n).tolist()


def stepwise(w: World, text: str) -> str:
    """Ordinary users sometimes ask for a step-by-step explanation."""
    return f"{text} {pick(w, BENIGN_CUES)}" if w.rng.random() < w.cfg.benign_stepwise_rate else text


def activity(w: World, median: float, sigma: float = 1.0) -> float:
    return float(np.clip(w.rng.lognormal(math.log(median), sigma), 0.03, 8.0))


def benign_request(w: World) -> tuple[tuple[Message, ...], int, str | None]:
    """One single-turn request drawn like the benign population's (chat opener, Q/A in the user's
    language mix, coding ask): messages, plausible completion tokens, a short reply."""
    p, r = w.pools, w.rng.random()
    if r < 0.3:
        conv = pick(w, p.conversations)
        return (Message("user", stepwise(w, conv[0])),), tokens(w, 50), conv[1] if len(conv) > 1 else None
    if r < 0.7:
        qa = pick(w, p.qa_by_lang[p.langs[int(w.rng.choice(len(p.langs), p=p.lang_weights))]])
        return (Message("user", stepwise(w, qa.question)),), tokens(w, 60), qa.answer
    return dev_messages(w), tokens(w, 250), None


def dev_messages(w: World) -> tuple[Message, ...]:
    p = w.pools
    if w.rng.random() < 0.75:
        text = pick(w, DEV_ASKS).format(code=pick(w, p.code))
    else:
        q = pick(w, p.mtbench)
        text = stepwise(w, q.turns[0])
    system = pick(w, DEV_SYSTEMS)
    user = Message("user", text)
    return (Message("system", system), user) if system else (user,)


# ---------------------------------------------------------------- personas


def chat_account(w: World, ident: Identity) -> None:
    for s in at_least_one(w, session_starts(w, activity(w, 0.22), ident.tz, CONSUMER_HOURS, 1.2)):
        conv = pick(w, w.pools.conversations)
        history: list[Message] = (
            [Message("system", "You are a friendly assistant.")] if w.rng.random() < 0.1 else []
        )
        t, ip = s, ident.ips[0] if w.rng.random() < 0.8 else ident.ips[-1]
        n_user = min((len(conv) + 1) // 2, 8)
        for i, gap in enumerate(think_gaps(w, n_user, 25.0)):
            user = conv[2 * i] if i else stepwise(w, conv[0])
            reply = conv[2 * i + 1] if 2 * i + 1 < len(conv) else "Glad to help!"
            history.append(Message("user", user))
            w.emit(ident, t, tuple(history), "chat", ip=ip, response=reply, completion_tokens=tokens(w, 45))
            history.append(Message("assistant", reply))
            t += gap


def qa_account(w: World, ident: Identity, lang: str) -> None:
    pool = w.pools.qa_by_lang[lang]
    for s in at_least_one(w, session_starts(w, activity(w, 0.27), ident.tz, CONSUMER_HOURS, 1.1)):
        t, ip = s, ident.ips[0] if w.rng.random() < 0.8 else ident.ips[-1]
        for gap in think_gaps(w, 1 + int(w.rng.geometric(0.5)), 30.0):
            qa = pick(w, pool) if w.rng.random() < 0.9 else pick(w, w.pools.qa_by_lang["english"])
            msgs = (Message("user", stepwise(w, qa.question)),)
            w.emit(
                ident, t, msgs, "multilingual_qa", ip=ip, response=qa.answer, completion_tokens=tokens(w, 60)
            )
            t += gap


def developer_account(w: World, ident: Identity, family: str = "developer") -> None:
    for s in at_least_one(w, session_starts(w, activity(w, 0.3), ident.tz, BUSINESS_HOURS, 0.3)):
        t = s
        for gap in think_gaps(w, 1 + int(w.rng.geometric(0.35)), 90.0):
            w.emit(ident, t, dev_messages(w), family, response=None, completion_tokens=tokens(w, 250))
            t += gap


def benchmark_account(w: World, ident: Identity) -> None:
    """Runs the WHOLE public benchmark (all 80 MT-bench questions, two turns each, or all 164 HumanEval
    prompts) back to back, 1-3 times; otherwise an ordinary developer. Benchmarks are public and fixed,
    so these runs ignore the calib/test split on purpose."""
    for _ in range(1 + int(w.rng.poisson(0.7))):
        t = w.start + float(w.rng.random()) * (w.end - w.start - 4 * 3600.0)
        cot, system = w.rng.random() < 0.4, pick(w, BENCH_SYSTEMS)
        base = [Message("system", system)] if system else []
        suffix = f"\n\n{BENCH_COT}" if cot else ""
        gaps = iter(w.rng.lognormal(math.log(3.0), 0.5, size=400).tolist())
        median = 500.0 if cot else 300.0
        if w.rng.random() < 0.5:
            for q in w.full.mtbench:
                history = list(base)
                for turn in q.turns:
                    history.append(Message("user", turn + suffix))
                    ctoks = tokens(w, median, 0.4)
                    w.emit(ident, t, tuple(history), "benchmark_run", response=None, completion_tokens=ctoks)
                    history.append(Message("assistant", f"[answer {q.question_id}]"))
                    t += next(gaps)
        else:
            for task in w.full.humaneval:
                msgs = (*base, Message("user", f"Complete the following function.\n\n{task.prompt}{suffix}"))
                w.emit(
                    ident, t, msgs, "benchmark_run", response=None, completion_tokens=tokens(w, median, 0.4)
                )
                t += next(gaps)
    developer_account(w, ident, "benchmark_run")


def batch_account(w: World, ident: Identity) -> None:
    """A nightly (same local hour) job: one system prompt, one template, hundreds of payloads per run at a
    fixed cadence with little jitter."""
    system, template = pick(w, BATCH_JOBS)
    hour, period = float(w.rng.uniform(0, 24)), float(w.rng.uniform(2.0, 15.0))
    n_runs = min(w.cfg.days, 1 + int(w.rng.poisson(1.0)))
    first = math.floor(w.start / DAY) * DAY + ((hour - ident.tz) % 24.0) * 3600.0  # UTC, same local hour
    first += DAY if first < w.start else 0.0
    for day in sorted(w.rng.choice(w.cfg.days, size=n_runs, replace=False).tolist()):
        t = first + day * DAY
        n = int(w.rng.integers(w.cfg.batch_payloads[0], w.cfg.batch_payloads[1] + 1))
        jitter = w.rng.uniform(-0.05, 0.05, size=n) * period
        for j in range(n):
            text = template.format(text=pick(w, w.pools.payloads))
            msgs = (Message("system", system), Message("user", text))
            w.emit(
                ident,
                t + j * period + float(jitter[j]),
                msgs,
                "batch_job",
                completion_tokens=tokens(w, 60, 0.4),
            )


def enterprise_org(w: World, n_members: int) -> None:
    """Accounts behind one corporate NAT /24 (a few egress IPs), one SDK version, one company card,
    office hours in the company's timezone."""
    prefix, tz = random_prefix(w), random_tz(w)
    egress = tuple(host_ip(w, prefix) for _ in range(int(w.rng.integers(2, 7))))
    ua, card = pick(w, SDK_UAS[:4]), w.new_payment()
    for _ in range(n_members):
        ident = Identity(w.new_account(), egress, ua, card, tz)
        for s in at_least_one(w, session_starts(w, activity(w, 0.9, 0.6), tz, BUSINESS_HOURS, 0.1)):
            t = s
            for gap in think_gaps(w, 1 + int(w.rng.geometric(0.4)), 60.0):
                ip = pick(w, egress)
                if w.rng.random() < 0.25:
                    msgs: tuple[Message, ...] = (
                        Message("user", pick(w, OFFICE_ASKS).format(text=pick(w, w.pools.payloads))),
                    )
                    w.emit(ident, t, msgs, "enterprise", ip=ip, completion_tokens=tokens(w, 120))
                else:
                    msgs, ctoks, reply = benign_request(w)
                    w.emit(ident, t, msgs, "enterprise", ip=ip, response=reply, completion_tokens=ctoks)
                t += gap


def simulate_benign(w: World) -> None:
    cfg = w.cfg
    n_bench, n_batch = cfg.scaled(cfg.n_benchmark_accounts), cfg.scaled(cfg.n_batch_accounts)
    n_ent, n_orgs = cfg.scaled(cfg.n_enterprise_accounts), cfg.scaled(cfg.n_enterprise_orgs)
    n_regular = cfg.scaled(cfg.n_benign_accounts) - n_bench - n_batch - n_ent
    if n_regular < 0:
        raise ConfigError("n_benign_accounts must cover the benchmark, batch and enterprise accounts")
    for _ in range(n_regular):
        r = w.rng.random()
        vpn = w.rng.random() < cfg.vpn_fraction
        lang = w.pools.langs[int(w.rng.choice(len(w.pools.langs), p=w.pools.lang_weights))]
        tz = LANG_TZ.get(lang, random_tz(w)) if r < 0.35 else random_tz(w)
        home = host_ip(w, pick(w, w.proxy_pool)) if vpn else host_ip(w, random_prefix(w))
        ident = Identity(
            w.new_account(),
            (home, host_ip(w, random_prefix(w))),
            pick(w, BROWSER_UAS),
            w.new_payment() if w.rng.random() < 0.6 else None,
            tz,
        )
        if r < 0.35:
            qa_account(w, ident, lang)
        elif r < 0.75:
            chat_account(w, ident)
        else:
            developer_account(w, Identity(ident.account, ident.ips, pick(w, SDK_UAS), ident.payment, tz))
    for _ in range(n_bench):
        ip = host_ip(w, random_prefix(w))
        benchmark_account(
            w, Identity(w.new_account(), (ip,), pick(w, HARNESS_UAS), w.new_payment(), random_tz(w))
        )
    for _ in range(n_batch):
        ip = host_ip(w, random_prefix(w))
        batch_account(w, Identity(w.new_account(), (ip,), pick(w, SDK_UAS), w.new_payment(), random_tz(w)))
    if n_ent:
        n_orgs = min(n_orgs, n_ent)
        sizes = 1 + w.rng.multinomial(n_ent - n_orgs, w.rng.dirichlet(np.full(n_orgs, 2.0)))
        for size in sizes.tolist():
            enterprise_org(w, size)
