"""``python -m thumbline.cli``: the ``thumbline`` command."""

from thumbline.cli import main

main()
