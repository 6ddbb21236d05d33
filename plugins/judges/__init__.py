"""First-party judges (see docs/judges.md): local transformers LMs, SmolLM2 from GGUF,
OpenAI-compatible endpoints. Registration lives in ``plugin.py``."""
