"""Training engine: the loop (trainer), its data (data), optimizer and schedule (optim), autocast and
layout (precision), torchrun/DDP setup (distributed), checkpoints (checkpoint).

Import the submodules directly, e.g. ``from mmssl.engine.checkpoint import save_checkpoint``.
"""
