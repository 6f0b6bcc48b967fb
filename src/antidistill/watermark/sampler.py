"""``WatermarkSampler``: the backends' TokenSampler that marks the answers of one request with one key.

One instance serves one request: all ``n`` choices of it (the local engine hands every row of a
request the same sampler and steps the rows in choice order). It knows where the generated part
starts (``prompt_len``, or the length of the context at the first call). Temperature 0 is greedy:
argmax, no watermark. Presence / frequency penalties and the greedy threshold are the same as the
unwatermarked ``backends.sampling.DefaultSampler``. Not thread-safe.

Fresh windows, request-wide (schemes with ``fresh_windows_only``, i.e. Gumbel). Gumbel-max sampling is
a deterministic function of (key, window, p): a window met twice with the same context would give the
same token again. So the sampler keeps the set of windows on which *this request* already made a keyed
choice, shared by its ``n`` choices, and a step whose window is in that set is a plain draw from ``p``
(with the sampler's own random generator) instead. Within one response this is the old
repeated-window rule (a response never re-uses its own windows); across the choices it is what makes
``n > 1`` work: the ``n`` choices start from the same prompt, so without it they would all emit the
same tokens. With it, choice 0 makes the keyed choice on the prompt's last window, choices 1..n-1 draw
plainly there, keep drawing plainly while they repeat choice 0's tokens (their windows are then the
ones choice 0 already used), and are watermarked again from the first window nobody has used.

Why this is sound. Model the PRF as a random function of the window. Each keyed choice reads the PRF
values of a window that no earlier step of the request has read, so, conditionally on everything the
request generated so far (all choices), those values are fresh independent uniforms and the choice is
an exact draw from ``p`` (the scheme is distortion-free per fresh window); plain draws are exact draws
from ``p`` too. By the chain rule the ``n`` choices are therefore jointly distributed as ``n``
independent samples of the model: as diverse as unwatermarked answers. Detection is unchanged:
every keyed token of every choice is an ordinary Gumbel token under the account's key, and the plain
ones are ordinary unmarked tokens (they dilute the score, they never fake it). The cost is a little
watermark density on the siblings: the tokens until they diverge from an earlier choice, and any later
window another choice already used. Separate *requests* do not share the set (the gateway makes one
sampler per request); the same prompt sent again in a new request can repeat an earlier answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from antidistill.backends.base import SamplingParams, WatermarkAssignment
from antidistill.backends.sampling import GREEDY_TEMPERATURE, apply_penalties
from antidistill.watermark.keys import WatermarkKey
from antidistill.watermark.schemes.base import KeyedScheme
from antidistill.watermark.schemes.kgw import KgwScheme
from antidistill.watermark.schemes.sampling import Workspace


class WatermarkSampler:
    """Implements ``backends.base.TokenSampler`` for the choices of one request (one instance each)."""

    def __init__(
        self,
        scheme: KeyedScheme,
        key: WatermarkKey,
        prompt_len: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        if key.scheme != scheme.name or key.params != scheme.params():
            raise ValueError(
                f"key {key.key_id} is for {key.scheme} {key.params}, not {scheme.name} {scheme.params()}"
            )
        self.scheme = scheme
        self.key = key
        self._prompt_len = prompt_len
        self._rng = rng
        self._ws: Workspace | None = None  # PRF seed + vocabulary buffers, built on the first step
        self._used: set[tuple[int, ...]] = set()  # windows this request made a keyed choice on

    @classmethod
    def for_key(
        cls, key: WatermarkKey, prompt_len: int | None = None, rng: np.random.Generator | None = None
    ) -> WatermarkSampler:
        return cls(key.build_scheme(), key, prompt_len, rng)

    def assignment(self) -> WatermarkAssignment:
        """What the gateway hands a backend for this request."""
        return WatermarkAssignment(sampler=self, key_id=self.key.key_id, config_hash=self.key.config_hash)

    @property
    def used_windows(self) -> int:
        """How many distinct windows this request has made a keyed choice on (all choices)."""
        return len(self._used)

    def _claim(self, context: Sequence[int]) -> bool:
        """Is the current window fresh for this request? Records it as used (O(window) per step)."""
        h = self.scheme.window
        if len(context) < h:
            return True  # no full window: the scheme draws plainly anyway
        window = tuple(int(t) for t in context[len(context) - h :])
        if window in self._used:
            return False
        self._used.add(window)
        return True

    def sample(self, context: Sequence[int], logits: NDArray[Any], params: SamplingParams) -> int:
        if self._prompt_len is None:
            self._prompt_len = len(context)
        if params.presence_penalty != 0.0 or params.frequency_penalty != 0.0:
            # same penalties as the unwatermarked DefaultSampler, on a private copy of the logits
            scores = np.array(logits, dtype=np.float64)
            apply_penalties(scores, context[self._prompt_len :], params)
            logits = scores
        if params.temperature < GREEDY_TEMPERATURE:
            return int(np.argmax(logits))  # greedy: no randomness, so no watermark either
        if self._rng is None:
            self._rng = np.random.default_rng(params.seed)
        if self._ws is None or self._ws.vocab_size != logits.shape[-1]:
            self._ws = self.scheme.workspace(self.key, logits.shape[-1])
        repeated = self.scheme.fresh_windows_only and not self._claim(context)
        return self.scheme.sample_step(context, logits, params, self._rng, self._ws, repeated=repeated)


class CanarySampler:
    """``watermark_canary``: the account's Gumbel watermark over a KGW-boosted distribution.

    Each step adds ``delta`` to the logits of the KGW canary key's green list (the canary's own
    window, default 2 tokens) — scaled by the temperature, so that after the division by the
    temperature the boost is exactly ``delta``, as in KGW — and hands the boosted logits to the
    account's ``WatermarkSampler``. Both marks then hold at once and are tested separately: the
    Gumbel choice is still an exact Gumbel-max draw (from the boosted distribution), so its scores
    under the account key are as strong as ever; green tokens come out ~e^delta times more often, so
    the KGW count under the canary key is as for KGW alone. Under H0 (text not from us) each test keeps
    its exact null, since neither key's PRF says anything about the other's. One difference from
    KGW: top-p is applied to the boosted distribution (the Gumbel sampler applies it), not before the
    boost. Greedy requests (temperature 0) stay unmarked, like every other request.

    Why KGW for flagged accounts: a distortion-free mark is hard to see in a *student* that was
    trained on the text (the student learns the distribution, and the distribution carries no mark);
    a green-list bias changes the distribution itself, so a student inherits it (radioactivity).
    """

    def __init__(self, base: WatermarkSampler, canary_key: WatermarkKey) -> None:
        scheme = canary_key.build_scheme()
        if not isinstance(scheme, KgwScheme):
            raise ValueError(f"the canary key {canary_key.key_id} is {canary_key.scheme}, not kgw")
        self.base = base
        self.canary_key = canary_key
        self.scheme = scheme
        self._ws: Workspace | None = None

    def assignment(self) -> WatermarkAssignment:
        key = self.base.key
        return WatermarkAssignment(
            sampler=self, key_id=key.key_id, config_hash=key.config_hash, canary_key_id=self.canary_key.key_id
        )

    def sample(self, context: Sequence[int], logits: NDArray[Any], params: SamplingParams) -> int:
        h = self.scheme.window
        if params.temperature >= GREEDY_TEMPERATURE and len(context) >= h:
            if self._ws is None or self._ws.vocab_size != logits.shape[-1]:
                self._ws = self.scheme.workspace(self.canary_key, logits.shape[-1])
            values = self._ws.prf_values(context[len(context) - h :])
            boosted = np.array(logits, dtype=np.float64)  # never in place: the caller's logits
            boosted += (values < self.scheme.gamma) * (self.scheme.delta * params.temperature)
            logits = boosted
        return self.base.sample(context, logits, params)
