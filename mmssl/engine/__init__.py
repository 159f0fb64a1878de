"""Training engine: the loop (trainer), torchrun/DDP helpers (distributed), checkpoints.

Import the submodules directly, e.g. ``from mmssl.engine.checkpoint import save_checkpoint``.
"""
