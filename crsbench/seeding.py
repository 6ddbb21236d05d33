"""One call that seeds every random number generator a run may touch."""
import os
import random
import sys


def seed_everything(seed: int) -> None:
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    import numpy as np

    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:  # only seed torch if the model already needs it
        import torch

        torch.manual_seed(seed)
