"""The HunyuanVideo family (placeholder until wired)."""
