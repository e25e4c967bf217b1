"""Raw files to the prepared folder: acquisition, readers, split, synthetic data, the TFRecord
schema, the prepared folder's reader and the prepare step."""

from bst.errors import DataError

__all__ = ["DataError"]
