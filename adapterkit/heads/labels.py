"""Label maps of native heads' configs (num_labels, id2label, label2id): torch-free, for the head registrations."""

from __future__ import annotations


def label_maps(labels) -> dict:
    return dict(num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
