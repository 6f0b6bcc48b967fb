"""The shipped policy. A policy file (``policy.file``) is merged over it key by key, so a file only
states what it changes, e.g. ``[tiers.new] flagged = ["block"]``.

Risk levels come from the account's latest risk state (the risk engine's finding):

- ``none``: no finding yet, or a score below ``levels.elevated_score``;
- ``elevated``: a score at or above ``levels.elevated_score``, not flagged;
- ``flagged``: flagged by the risk engine (its threshold is calibrated on benign traffic for the
  target false-positive rate), or a score at or above ``levels.flagged_score`` when that is set.

Actions, from mild to severe (an account under ``block`` or ``reverify`` gets nothing else):

- ``watermark_canary``: its answers also carry the KGW radioactivity canary;
- ``strip_reasoning``: reasoning the backend emits (``<think>``-style tags in the text, or a
  ``reasoning_content`` field) is removed or replaced by a fixed-length summary, and copies of it in
  the visible answer (verbatim, partial, base64/base32/hex, rot13, reversed) are redacted
  (``[strip_reasoning]``; see ``antidistill.hardening``);
- ``cap_params``: ``n``, ``logprobs`` and ``top_logprobs`` capped (``[cap_params]``); ``logprobs``
  together with ``logit_bias`` refused;
- ``throttle``: requests and tokens per minute (``[throttle]``, or the tier's own ``throttle``),
  and, for an account the risk engine linked to a cluster, also the cluster's shared budget
  (``[cluster_throttle]``: every throttled member draws from it);
- ``reverify``: every request answered 403 with ``[reverify].message`` (what the client must do);
- ``block``: every request answered 403 ``account_blocked`` with ``x-should-retry: false``.
"""

from __future__ import annotations

DEFAULT_POLICY_TOML = """\
version = 1

[levels]
elevated_score = 0.9         # score >= this (and not flagged): elevated
# flagged_score = 0.99       # score >= this counts as flagged even if the engine did not flag it

[throttle]                   # limits of the throttle action (a tier may set its own)
rpm = 20
tpm = 20000
period_s = 60.0

[cluster_throttle]           # one more budget, shared by all throttled accounts of one linked cluster
rpm = 60                     # (hydra: hundreds of accounts each under its own throttle still add up)
tpm = 60000
period_s = 60.0

[cap_params]
max_n = 1                    # choices per request
allow_logprobs = true        # the sampled tokens' own logprobs
max_top_logprobs = 0         # alternatives per token
refuse_logprobs_with_logit_bias = true
over_cap = "refuse"          # "refuse": 400 naming the parameter; "cap": lower it silently

[strip_reasoning]
mode = "remove"              # "remove": drop it; "summary": "[reasoning withheld: N tokens]" instead
tags = ["think", "thinking", "reasoning", "thought"]   # <tag>...</tag> in the text is reasoning
implicit_open = false        # true: the text starts inside a reasoning block (the chat template opened it)
detect_copies = true         # redact copies of the reasoning in the visible answer
min_copy_words = 8           # a copy: >= this many consecutive words of the reasoning (also decoded)
window_chars = 256           # streams: visible text after reasoning is held this far behind the model
max_hold_chars = 4096        # ...and an unfinished base64/hex-like run up to this long, to decode it whole
max_reasoning_chars = 262144 # reasoning kept per choice to compare copies with (more is still removed)

[reverify]
message = "This account must be re-verified before it can make more API requests. Sign in to \
your account dashboard, complete the identity verification it asks for, then retry."

[tiers.trusted]
none = []
elevated = ["watermark_canary"]
flagged = ["watermark_canary", "strip_reasoning", "cap_params", "throttle"]
throttle = { rpm = 120, tpm = 200000, period_s = 60.0 }

[tiers.standard]
none = []
elevated = ["watermark_canary", "cap_params"]
flagged = ["watermark_canary", "strip_reasoning", "cap_params", "throttle"]

[tiers.new]
none = []
elevated = ["watermark_canary", "cap_params", "throttle"]
flagged = ["reverify"]
"""
