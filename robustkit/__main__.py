"""``python -m robustkit``: the command line, also what ``torchrun ... -m robustkit`` starts per rank."""

from robustkit.cli import main

if __name__ == "__main__":
    main()
