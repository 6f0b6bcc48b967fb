"""Evaluation: traffic corpora, attacker simulators, replay, distillation experiments, metrics, and the
fake OpenAI-compatible upstream used by benchmarks and tests (``antidistill.evaluation.fake_upstream``)."""
