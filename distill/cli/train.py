"""`riformer-train` / `python distill/train.py`: the help text, and the trainer started only
when there is something to train (its imports take seconds; `--help` should not)."""
import sys

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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(HELP, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    from distill.train import main as train
    return train(argv)


if __name__ == '__main__':
    sys.exit(main())
