"""Training loops: offline (SFT and weighted distillation) and, later, on-policy."""
