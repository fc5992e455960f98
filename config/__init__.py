"""Configuration: the typed model, its TOML loader, the statutory limits table and the
shared vocabulary (reading batches, status bits, errors) that every package may import."""
