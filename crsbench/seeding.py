"""One call that seeds every random number generator a run may touch."""
import os
import random
import sys


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """``deterministic``: also make torch pick deterministic kernels (training paths). On CPU
    this matters for the backward of advanced indexing (``index_put_(accumulate=True)``),
    which otherwise adds in parallel, in any order, with more than one thread; on CUDA the
    ops without a deterministic kernel only warn."""
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    import numpy as np

    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:  # only seed torch if the model already needs it
        import torch

        torch.manual_seed(seed)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
