"""``python -m vla_lab.train`` = ``vla-train``."""

from vla_lab.cli.train import main

if __name__ == "__main__":
    main()
