"""The one data path: sources materialize into Samples, batches are index sets into them."""

from facedapt.data.samples import (
    BASIC_EXPRESSIONS,
    EXPRESSIONS,
    NUM_POSE_BINS,
    YAW_BIN_WIDTH,
    YAW_BINS,
    DatasetSource,
    Samples,
    bin_to_yaw,
    expression_index,
    yaw_to_bin,
)

__all__ = [
    "BASIC_EXPRESSIONS",
    "EXPRESSIONS",
    "NUM_POSE_BINS",
    "YAW_BIN_WIDTH",
    "YAW_BINS",
    "DatasetSource",
    "Samples",
    "bin_to_yaw",
    "expression_index",
    "yaw_to_bin",
]
