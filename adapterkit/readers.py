"""Extra file readers by format name (CoNLL and friends register here)."""
READERS: dict = {}
