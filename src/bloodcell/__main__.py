"""``python -m bloodcell``: the command-line interface."""

from bloodcell.cli.main import main

if __name__ == "__main__":
    main()
