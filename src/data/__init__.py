"""The data: MNIST as preloaded tensors and its seeded split (:mod:`~src.data.mnist`), the IDX files and
their checksums (:mod:`~src.data.idx`), your own images in MNIST's format (:mod:`~src.data.images`),
and batch augmentation (:mod:`~src.data.augment`)."""
