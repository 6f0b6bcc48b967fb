"""The embedded teacher: a local transformers model behind the ``Backend`` protocol.

``start()`` loads the model in a worker thread (see ``model_loading``) and starts the
``LocalEngine`` thread, which batches all concurrent requests and samples every token through the
request's ``TokenSampler`` (the watermark's, when the gateway assigned one). Tokenization also runs on
the engine thread: HF tokenizers are not safe to share between threads, and it keeps the event loop
free of any model work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from antidistill.backends.base import Choice, Chunk, Completion, FinishReason, GenerationRequest, Usage
from antidistill.backends.local_engine import ChoiceDone, LocalEngine, RequestDone, RequestFailed, TextDelta
from antidistill.backends.model_loading import load_model
from antidistill.errors import BackendError, InvalidRequestError
from antidistill.settings import LocalBackendSettings


class LocalBackend:
    name = "local"

    def __init__(
        self,
        settings: LocalBackendSettings,
        served_model: str,
        *,
        model: Any = None,
        tokenizer: Any = None,
        max_pending: int | None = None,
    ) -> None:
        """``model``/``tokenizer`` (both or neither) skip loading, e.g. a tiny model in tests.
        ``max_pending``: requests waiting for a batch slot before BackendOverloadedError
        (default 8 x max_batch_size)."""
        if (model is None) != (tokenizer is None):
            raise ValueError("pass both model and tokenizer, or neither")
        self._settings = settings
        self._served_model = served_model
        self._model, self._tokenizer = model, tokenizer
        self._max_pending = max_pending or settings.max_pending or 8 * settings.max_batch_size
        self._engine: LocalEngine | None = None
        self._max_context = settings.max_context_tokens
        self._vocab_info: tuple[str, int] | None = None

    @property
    def engine(self) -> LocalEngine | None:
        return self._engine

    async def start(self) -> None:
        if self._engine is not None:
            return
        if self._model is None:
            loaded = await asyncio.to_thread(load_model, self._settings)
            self._model, self._tokenizer = loaded.model, loaded.tokenizer
        elif self._settings.torch_threads:
            import torch

            torch.set_num_threads(self._settings.torch_threads)
        positions = getattr(getattr(self._model, "config", None), "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            self._max_context = min(self._max_context, positions)
        engine = LocalEngine(
            self._model,
            self._decode,
            _eos_ids(self._model, self._tokenizer),
            max_batch_size=self._settings.max_batch_size,
            max_pending=self._max_pending,
            max_context_tokens=self._max_context,
        )
        engine.start()
        self._engine = engine

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.aclose()

    def model_ids(self) -> list[str]:
        return [self._served_model]

    def watermark_vocabulary(self) -> tuple[str, int]:
        """(tokenizer fingerprint, logits size): what a watermark key for this model fixes."""
        from antidistill.watermark.keystore import tokenizer_fingerprint

        if self._model is None:
            raise BackendError("the local backend is not started")
        if self._vocab_info is None:
            self._vocab_info = (tokenizer_fingerprint(self._tokenizer), int(self._model.config.vocab_size))
        return self._vocab_info

    async def complete(self, req: GenerationRequest) -> Completion:
        n = req.params.n
        texts: list[list[str]] = [[] for _ in range(n)]
        finish: list[FinishReason] = ["stop"] * n
        usage = Usage(0, 0)
        async with contextlib.aclosing(self.stream(req)) as chunks:
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = chunk.usage
                    continue
                texts[chunk.index].append(chunk.text)
                if chunk.finish_reason is not None:
                    finish[chunk.index] = chunk.finish_reason
        wm = req.watermark
        return Completion(
            choices=tuple(Choice(index=i, text="".join(texts[i]), finish_reason=finish[i]) for i in range(n)),
            usage=usage,
            watermark_key_id=wm.key_id if wm else None,
            watermark_config_hash=wm.config_hash if wm else None,
        )

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        engine = self._engine
        if engine is None:
            raise BackendError("the local backend is not started")
        if req.params.n < 1 or req.params.max_tokens < 1:
            raise InvalidRequestError("n and max_tokens must be at least 1", param="n")
        sampler = req.watermark.sampler if req.watermark is not None else None
        handle = engine.submit(functools.partial(self._encode, req), req.params, sampler)
        over = False
        try:
            while True:
                event = await handle.events.get()
                if isinstance(event, TextDelta):
                    yield Chunk(index=event.index, text=event.text)
                elif isinstance(event, ChoiceDone):
                    yield Chunk(index=event.index, text=event.text, finish_reason=event.finish_reason)
                elif isinstance(event, RequestDone):
                    over = True
                    yield Chunk(usage=Usage(event.prompt_tokens, event.completion_tokens))
                    return
                elif isinstance(event, RequestFailed):
                    over = True
                    raise event.error
        finally:
            if not over:  # consumer went away (stream closed / task cancelled): stop generating
                handle.cancel()

    # ---- tokenizer (called on the engine thread only) ----------------------------------------------
    def _encode(self, req: GenerationRequest) -> list[int]:
        tok = self._tokenizer
        if req.kind == "chat":
            param = "messages"
            if not getattr(tok, "chat_template", None):
                raise InvalidRequestError("this model has no chat template; use /v1/completions", param=param)
            messages = [{"role": m.role, "content": m.content} for m in req.messages]
            try:
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception as e:  # jinja errors: roles the template does not accept, ...
                raise InvalidRequestError(
                    f"the messages do not fit the chat template: {e}", param=param
                ) from e
            ids = list(tok(text, add_special_tokens=False)["input_ids"])
        else:
            param = "prompt"
            ids = list(tok(req.prompt)["input_ids"])
            if not ids and getattr(tok, "bos_token_id", None) is not None:
                ids = [int(tok.bos_token_id)]
        if not ids:
            raise InvalidRequestError("the prompt is empty", param=param)
        if len(ids) >= self._max_context:
            raise InvalidRequestError(
                f"This model's maximum context length is {self._max_context} tokens, "
                f"but the {param} has {len(ids)} tokens.",
                param=param,
                code="context_length_exceeded",
            )
        return ids

    def _decode(self, ids: Sequence[int]) -> str:
        return str(
            self._tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-sequence ids from the generation config, the model config and the tokenizer."""
    out: set[int] = set()
    sources = (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer)
    for src in sources:
        value = getattr(src, "eos_token_id", None)
        for v in value if isinstance(value, list | tuple | set) else [value]:
            if isinstance(v, int):
                out.add(v)
    return out
