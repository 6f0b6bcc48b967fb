"""Student training for the distillation experiment: a GPT-2 from config learns its pairs; LoRA
adapters train on a copy of the teacher (never the teacher itself) and are merged before saving.
Tiny models from configs with the real SmolLM2 tokenizer (no teacher weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from antidistill.evaluation.student import StudentConfig, render_pair, train_student
from tests.integration.test_watermark_cli import text_tokenizer

PAIRS = [
    (f"Question number {i}: what is {i} plus {i}?", f"The answer is {2 * i}, of course.") for i in range(6)
]


def test_render_pair_masks_the_prompt_and_ends_the_turn() -> None:
    tok = text_tokenizer().tokenizer
    ids, n_prompt = render_pair(tok, "Hi there", "Hello!", max_len=512)
    assert ids[-1] == tok.eos_token_id and 0 < n_prompt < len(ids) - 1
    assert tok.decode(ids[n_prompt:-1]) == "Hello!"
    cut, n_cut = render_pair(tok, "word " * 300, "Hello!", max_len=64)
    assert len(cut) == 64 and tok.decode(cut[n_cut:-1]) == "Hello!"  # the answer survives the cut


def test_gpt2_student_learns_its_pairs(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    tt = text_tokenizer()
    cfg = StudentConfig(n_layer=1, n_embd=32, n_head=2, epochs=30, lr=1e-2, batch_tokens=512, threads=1)
    stats = train_student(PAIRS, tt.tokenizer, tt.vocab_size, cfg, tmp_path / "s", progress=False)
    assert stats.examples == 6 and stats.last_loss < stats.first_loss / 2, stats
    assert (tmp_path / "s" / "config.json").is_file() and (tmp_path / "s" / "tokenizer.json").is_file()


def test_lora_student_trains_a_copy_and_merges(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tt = text_tokenizer()
    teacher = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=tt.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
    ).eval()
    before = teacher.model.layers[0].self_attn.q_proj.weight.clone()
    cfg = StudentConfig(kind="lora", lora_rank=4, epochs=3, lr=1e-2, batch_tokens=512, threads=1)
    stats = train_student(
        PAIRS, tt.tokenizer, tt.vocab_size, cfg, tmp_path / "l", teacher=teacher, progress=False
    )
    assert stats.params_trained == 4 * (4 * 32 + 4 * 32)  # rank-4 A and B on q, k, v, o (32 x 32 each)
    assert torch.equal(teacher.model.layers[0].self_attn.q_proj.weight, before)  # the teacher is untouched
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "l")
    assert not any("lora" in k for k in student.state_dict())  # merged: a plain model
    assert not torch.equal(student.model.layers[0].self_attn.q_proj.weight, before)
