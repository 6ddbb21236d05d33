"""``python -m crsbench ...`` (and ``accelerate launch -m crsbench run ...``)."""
from crsbench.cli import main

main()
