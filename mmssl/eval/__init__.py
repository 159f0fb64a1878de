"""Transfer evaluation of pretrained encoders."""
