"""Run the seq2seq command line from a checkout: ``python cli.py train configs/demo_es_en.yaml``."""

from seq2seq.cli import main

if __name__ == "__main__":
    main()
