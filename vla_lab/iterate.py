"""``python -m vla_lab.iterate`` = ``vla-iterate``."""

from vla_lab.cli.iterate import main

if __name__ == "__main__":
    main()
