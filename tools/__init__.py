"""Command-line tools (also installed as console scripts, see setup.cfg); their logic lives in distill/ and models/."""
