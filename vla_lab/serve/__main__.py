"""``python -m vla_lab.serve`` = ``vla-serve``."""

from vla_lab.cli.serve import main

if __name__ == "__main__":
    main()
