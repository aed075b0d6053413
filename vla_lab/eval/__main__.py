"""``python -m vla_lab.eval`` = ``vla-eval``."""

from vla_lab.cli.eval import main

if __name__ == "__main__":
    main()
