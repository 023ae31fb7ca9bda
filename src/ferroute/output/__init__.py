"""Results as tables a data team can use (CSV, JSONL, Parquet) and routing at scale on Ray Data."""
