"""The distillation trainer: recipes, data, recorders, losses, criterion, engine, checkpoints."""
