"""Console entry points: thin layers that parse, compose configs and call into the package."""
