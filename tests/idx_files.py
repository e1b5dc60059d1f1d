"""IDX files (the MNIST / Fashion-MNIST format) written for tests that read them."""

import gzip
import struct

import numpy as np


def write_idx(path, array, compress=True):
    """``array`` (uint8) as an IDX file at ``path`` (``path.gz`` when ``compress``)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
