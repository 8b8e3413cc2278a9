"""The dealer configuration file: reading and checking the YAML (parse.py), applying it (apply.py)."""
