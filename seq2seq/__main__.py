"""``python -m seq2seq ...`` (and ``torchrun ... -m seq2seq train CONFIG``): the command line."""

from .cli import main

main()
