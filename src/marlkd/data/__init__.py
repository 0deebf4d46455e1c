"""Offline datasets: the HDF5 format (validating reader, atomic writer) and batched collection."""

from marlkd.data.collect import collect_episodes, collect_random_dataset, random_act_fn
from marlkd.data.format import (
    FORMAT_VERSION,
    DatasetMetadata,
    EpisodeData,
    OfflineDataset,
    compute_checksum,
    load_dataset,
    write_dataset,
)

__all__ = [
    "FORMAT_VERSION",
    "DatasetMetadata",
    "EpisodeData",
    "OfflineDataset",
    "collect_episodes",
    "collect_random_dataset",
    "compute_checksum",
    "load_dataset",
    "random_act_fn",
    "write_dataset",
]
