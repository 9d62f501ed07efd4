"""``python -m pgaudit``: the command line (what ``torchrun -m pgaudit`` starts in each worker)."""

from pgaudit.cli import main

if __name__ == "__main__":
    main()
