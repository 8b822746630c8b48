"""A C2SP tlog-witness (``ledger witness``) and the log's side of it (the
submitter that asks witnesses to cosign each new checkpoint)."""
