"""Offline learning from teachers: teacher data generated once into a dataset on disk, then trained on.

- :mod:`mentor.offline.generate`: ``mentor generate``, G scored teacher responses per prompt with group
  statistics and the weight under every normalisation (AdvDistill data, docs/methods.md, section 2);
- :mod:`mentor.offline.distill`: that dataset as weighted :class:`~mentor.train.sft.SFTExample` for
  AdvDistill, plain SFT and rejection-sampling SFT, all on the same ``train_sft`` loop.
"""
