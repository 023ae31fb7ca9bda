"""The lab's bench: FERPlus and CK+ readers, the test corruptions and the held-out shift family,
the non-face probe, the protocol's statistics, the dual-validation protocol and its report."""
