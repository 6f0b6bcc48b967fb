"""Scripts run INSIDE the vLLM venv (``.venv-vllm``), never imported by the main test suite."""
