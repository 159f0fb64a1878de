"""Batched device-side transforms: whole batches of uint8 frames in, augmented float tensors out."""
