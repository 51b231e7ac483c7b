"""The node agent: applies the MigNode spec to the GPUs through NVML and reports status."""
