"""What the trainer says and does before its heavy imports (seconds), for both of its entry
points (`riformer-train`, distill/cli/train.py, and `python distill/train.py`): the help text,
the check of the python and of the recipe with its overrides, and the one-line exit on bad input
that also keeps `accelerate launch` from repeating it. Imports nothing heavy."""
import sys

from distill.venv import require_venv

HELP = """usage: riformer-train RECIPE.yaml [key.sub=value ...] [--check]
       (the same as: python distill/train.py ..., or accelerate launch distill/train.py ... for several processes)

Distil a RIFormer student (or train any timm model) from a YAML recipe.

  RECIPE.yaml      a recipe (recipes/: digits/*.yaml run on a CPU in minutes; riformer_s12.yaml ... are the
                   paper's ImageNet recipes). Its sections and keys: README.md, "Train".
  key.sub=value    override any recipe key, checked like the recipe (e.g. train.epochs=20
                   train.output_dir=runs/x data.path=/data/imagenet distill.l_rel.weight=0)
  resume=true      continue the run in train.output_dir from its newest intact checkpoint (train.epochs may grow)
  --check          check every input (recipe, data, teacher, imitated blocks), print the loss balance of each
                   window of loss terms on one real batch, and exit without training
  -h, --help       this text

examples:
  riformer-train recipes/digits/teacher.yaml                          # -> runs/digits/teacher/
  riformer-train recipes/digits/imitation.yaml train.epochs=20 resume=true
  riformer-train recipes/riformer_s12.yaml data.path=/data/imagenet --check
  accelerate launch --multi_gpu --num_processes 8 distill/train.py recipes/riformer_s12.yaml data.path=/data/imagenet

A run prints where it writes (train.output_dir) and, when it ends, the files it wrote and the next command.
Bad input: one `error:` line and exit code 2."""


def show_help(argv) -> int:
    """The help text: on stdout and 0 when asked for, on stderr and 2 when there are no arguments."""
    print(HELP, file=sys.stdout if argv else sys.stderr)
    return 0 if argv else 2


def before_imports(argv):
    """What the trainer answers before it imports torch (seconds): a python without the project's
    packages (one line naming the fix), --help, and the recipe with its overrides checked (every
    mistake in one `error:` line). Exits on those; returns when there is something to train."""
    if not argv or argv[0] in ('-h', '--help'):
        sys.exit(show_help(argv))
    require_venv()
    from distill.config import load_recipe
    from distill.errors import RecipeError
    try:
        load_recipe(argv[0], [a for a in argv[1:] if a != '--check'])
    except RecipeError as e:
        quit_on_input_error(str(e))


def quit_on_input_error(message):
    """`error: MESSAGE` (from the first process only: every process reads the same input) and exit 2.
    Under `accelerate launch` (without -q), the launcher would then print the same lines again as a
    RuntimeError and its own traceback; it is asked to stop instead (see stop_launcher)."""
    import os
    if int(os.environ.get('RANK', 0)) == 0:
        print(f'error: {message}', file=sys.stderr, flush=True)
        stop_launcher()
    sys.exit(2)


def stop_launcher():
    """Under `accelerate launch` without -q/--quiet, SIGTERM the launcher so that a bad input is
    our one line, not that line again in accelerate's RuntimeError and a CalledProcessError traceback.

    accelerate (1.x) re-raises a child's non-zero exit with the tail of its stderr and a traceback,
    unless it runs with --quiet; on SIGTERM it stops its children and exits 128 + 15 without a
    traceback (launch.py, _run_subprocess / _run_torchrun). So the launcher exits 143, this
    process 2. Nothing happens when the parent is anything else (python, a shell, torchrun, or
    `python -m accelerate.commands.launch`, the form the suite's multi-process tests run).
    Called by the first process only, after its error line is written (the others print nothing)."""
    import os
    import signal
    parent = os.getppid()
    try:
        argv = open(f'/proc/{parent}/cmdline', 'rb').read().split(b'\0')
    except OSError:
        return
    words = [a.decode(errors='replace') for a in argv if a]
    names = [os.path.basename(w) for w in words[:3]]
    launched = 'launch' in words[1:4] and any(n.startswith('accelerate') for n in names)
    if launched and not {'-q', '--quiet'} & set(words[:words.index('launch') + 20]):
        sys.stdout.flush()
        sys.stderr.flush()
        wait_until_read(sys.stderr)     # the launcher tees our stderr: it must have copied our line
        os.kill(parent, signal.SIGTERM)


def wait_until_read(stream, timeout=2.0):
    """Wait until the reader of `stream` (a pipe) has taken everything written to it, and a moment
    more for it to pass the bytes on: a launcher stopped between its read and its write would lose
    them. Returns at once for a file or a terminal."""
    import fcntl
    import struct
    import termios
    import time
    deadline = time.monotonic() + timeout
    try:
        fd = stream.fileno()
        while time.monotonic() < deadline:
            unread = struct.unpack('i', fcntl.ioctl(fd, termios.FIONREAD, b'\0\0\0\0'))[0]
            if not unread:
                break
            time.sleep(0.02)
    except (OSError, ValueError, AttributeError):
        return
    time.sleep(0.2)
