"""`riformer-train` / `python distill/train.py`: the trainer started only when there is something
to train (its imports take seconds; `--help` should not). The help text and the checks before
the imports are distill/train_entry.py's, which distill/train.py uses too."""
import sys

from distill.train_entry import (  # noqa: F401  (HELP ... stop_launcher: this command's, as before)
    HELP, before_imports, quit_on_input_error, show_help, stop_launcher)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    before_imports(argv)
    from distill.train import main as train
    return train(argv)


if __name__ == '__main__':
    sys.exit(main())
