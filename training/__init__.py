"""Training layer of vglamm: data loaders, the trainer, synthetic data and annotation tools."""
